"""One GetStreamingEvents in a thread of its own, feeding an asyncio queue.

exchangelib blocks for the whole stream (up to ``minutes``) and parses it as
it comes; the thread puts ("notification", n), then ("closed", None) when
Exchange ends the stream, or ("error", exc)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any

from exchangelib.services import GetStreamingEvents


class Stream:
    def __init__(self, account: Any, subscriptions: list[str], minutes: int, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._svc = GetStreamingEvents(account=account)
        self._loop = loop
        self._stopped = False
        self._thread = threading.Thread(target=self._run, args=(subscriptions, minutes), name="ews-stream", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[str, Any]) -> None:
        if self._stopped:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def _run(self, subscriptions: list[str], minutes: int) -> None:
        try:
            for notification in self._svc.call(subscription_ids=subscriptions, connection_timeout=minutes):
                self._put(("notification", notification))
            self._put(("closed", None))
        except Exception as exc:  # noqa: BLE001 - handed to the event loop, which decides
            self._put(("error", exc))

    def stop(self) -> None:
        """Cut the stream: shut its socket down, so the thread's blocking read ends at
        once (closing the response from here would wait for that read), then let
        exchangelib release the session, off the event loop."""
        self._stopped = True
        response = getattr(self._svc, "_streaming_response", None)
        connection = getattr(getattr(response, "raw", None), "_connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        threading.Thread(target=self._release, name="ews-stream-stop", daemon=True).start()

    def _release(self) -> None:
        self._thread.join(timeout=120)
        with contextlib.suppress(Exception):
            self._svc.stop_streaming()


__all__ = ["Stream"]
