"""aioimaplib 2.0.3's protocol handler with its defects fixed: the client class a
connection (:mod:`mailfiler.sources.imaplink`) is made with, and its commands.

The defects (``../shared/reference/libs.md`` section 2) fixed here:

* **Recursion once per response line** (``_handle_responses``, issue 118):
  :class:`_Protocol` replaces it with a loop, so a burst of thousands of
  EXPUNGE lines cannot crash it; callers still fetch in batches of at most
  400 UIDs.
* **Untagged responses outside a command are dropped** (logged "ignored"):
  a watcher connection keeps them in its push queue instead.
* **``* `` stripped anywhere in a line** (``line.replace(b'* ', b'')``): only
  the prefix is stripped here, so a folder named "a * b" survives.
* **Per-line costs**: a repr of every read for a debug line, a timer
  rescheduled on every line (:class:`_LazyTimer`), and a FETCH's completeness
  check rescanning every line so far (:func:`_wait_data`).
* **No NOTIFY**: it is registered in aioimaplib's command table.
"""

from __future__ import annotations

import asyncio
import logging

from aioimaplib import aioimaplib as core

log = logging.getLogger("mailfiler.sources.imap")

# RFC 5465 NOTIFY is not in aioimaplib's table, and execute() refuses unknown
# commands.  Synchronous like IDLE: nothing else may run while it is set up.
core.Commands.setdefault("NOTIFY", core.Cmd("NOTIFY", (core.AUTH, core.SELECTED), core.Exec.is_sync))


class _Protocol(core.IMAP4ClientProtocol):
    """aioimaplib's protocol with the per-line recursion and the prefix strip fixed."""

    #: keep untagged responses nobody waits for (a watcher connection)
    keep_unsolicited = False
    # set by aioimaplib's protocol (untyped), read below
    incomplete_line: bytes
    current_command: core.Command | None

    def data_received(self, d: bytes) -> None:
        # upstream formats every chunk for a debug line ("%s" % d) even when debug
        # logging is off: a repr of each 64 KB read, most of a fetch's cost
        try:
            self._handle_responses(self.incomplete_line + d, self._handle_line, self.current_command)
            self.incomplete_line = b""
            self.current_command = None
        except core.IncompleteRead as incomplete_read:
            self.current_command = incomplete_read.cmd
            self.incomplete_line = incomplete_read.data

    def _handle_responses(self, data, line_handler, current_cmd=None) -> None:  # type: ignore[no-untyped-def]
        # The upstream version calls itself once per line (RecursionError on a
        # few thousand lines, issue 118); this is the same logic as a loop.
        while True:
            if not data:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and _wait_data(current_cmd):
                    raise core.IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                data = current_cmd.append_literal_data(data)
                if current_cmd.wait_literal_data():
                    raise core.IncompleteRead(current_cmd)
            line, separator, tail = data.partition(core.CRLF)
            if not separator:
                raise core.IncompleteRead(current_cmd, data)
            cmd = line_handler(line, current_cmd)
            begin_literal = core.literal_data_re.match(line)
            if begin_literal:
                if cmd is None:
                    cmd = core.Command("NIL", "unused", loop=self.loop)
                cmd.begin_literal_data(int(begin_literal.group("size")))
                data, current_cmd = tail, cmd
            elif cmd is not None and _wait_data(cmd):
                data, current_cmd = tail, cmd
            else:
                data, current_cmd = tail, None

    def _untagged_response(self, line: bytes):  # type: ignore[no-untyped-def]
        line = line[2:] if line.startswith(b"* ") else line
        if self.pending_sync_command is not None:
            self.pending_sync_command.append_to_resp(line)
            return self.pending_sync_command
        match = core.message_data_re.match(line)
        if match:
            name = match.group(1).decode().upper()
            text = line
        else:
            word, _, text = line.partition(b" ")
            name = word.decode("ascii", "replace").upper()
        command = self.pending_async_commands.get(name)
        if command is not None:
            command.append_to_resp(text)
            return command
        command = self.pending_async_commands.get("NOOP")
        if command is not None:
            command.append_to_resp(line)
            return command
        if self.keep_unsolicited:
            self.idle_queue.put_nowait([line])
        else:
            log.debug("unsolicited IMAP response ignored: %.200r", line)
        return None


class _LazyTimer:
    """aioimaplib's per-command inactivity timeout, without rescheduling a timer
    on every response line and literal chunk (a cancel and a call_later each: a
    400-message FETCH did 2,400 of them).  Activity only notes the time; the one
    timer, when it fires, checks how long the command has really been idle and
    waits out the rest.  Same rule: the command times out after ``timeout``
    seconds without data."""

    _loop: asyncio.AbstractEventLoop
    _timeout: float | None
    _timer: asyncio.Handle

    def _set_timer(self) -> None:
        self._last_activity = self._loop.time()
        if self._timeout is not None:
            self._timer = self._loop.call_later(self._timeout, self._check_idle)

    def _reset_timer(self) -> None:
        self._last_activity = self._loop.time()

    def _check_idle(self) -> None:
        assert self._timeout is not None
        idle = self._loop.time() - self._last_activity
        if idle >= self._timeout:
            self._timeout_callback()  # type: ignore[attr-defined]
        else:
            self._timer = self._loop.call_later(self._timeout - idle, self._check_idle)


class Command(_LazyTimer, core.Command):
    pass


class FetchCommand(_LazyTimer, core.FetchCommand):
    pass


def _wait_data(cmd: core.Command) -> bool:
    """``cmd.wait_data()``, in constant time for a FETCH.

    Upstream's ``FetchCommand.wait_data`` rescans every response line so far
    on each call (twice per message: quadratic in a batch of 400).  The same
    answer, kept up to date over the lines added since the last call: are the
    parentheses since the last ``n FETCH (`` line unbalanced?  Literal data
    (bytearray lines) does not count, as upstream."""
    if not isinstance(cmd, core.FetchCommand):
        return cmd.wait_data()
    state = cmd.__dict__.setdefault("_mailfiler_parens", [0, 0])  # [lines scanned, open - close]
    lines = cmd._resp_lines  # noqa: SLF001 - the lines upstream's wait_data reads
    fetch_re = core.FetchCommand.FETCH_MESSAGE_DATA_RE
    scanned, balance = state
    for line in lines[scanned:]:
        if isinstance(line, bytes):
            if fetch_re.match(line):
                balance = 0
            balance += line.count(b"(") - line.count(b")")
    state[0], state[1] = len(lines), balance
    return balance != 0


class Client(core.IMAP4):
    """aioimaplib's client, made with the fixed protocol handler."""

    def create_client(self, host, port, loop, conn_lost_cb=None, ssl_context=None) -> None:  # type: ignore[no-untyped-def]
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )
