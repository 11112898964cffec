"""Auto-tracking: whether a message outside tracked folders is tracked.

Mail a user files into a tracked folder is always tracked.  Mail elsewhere
(the Inbox, a folder an inbox rule moved it to, Sent) is tracked when the
first of these that applies says so:

1. the **never-track** lists (the mailbox's and the global one): the sender
   is on a list, or every party other than the mailbox owner is.  Not even a
   rule overrides them: they are a privacy promise (HubSpot's never-log);
2. the **rules**: ``skip`` skips; ``track`` or a ``regarding`` tracks;
3. **machine-written mail** (auto-replies, delivery reports, bounces) is
   skipped; a rule that tracks it (step 2) came first;
4. the mailbox's **policy**: ``none`` tracks nothing more; ``replies`` tracks
   replies to tracked mail (correlation finds the thread); ``known`` also
   tracks mail from or to a CRM record (users, the organisation's own staff,
   do not count); ``all`` tracks everything.

The facts that need the store (correlation, resolved parties) are passed as
callables, so a message the lists or the rules settle costs no query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mailfiler.config.schema import AutoTrack
from mailfiler.rules import Decision
from mailfiler.rules.patterns import compile_folder

__all__ = ["FolderFilter", "NeverTrack", "Verdict", "auto_verdict"]


class FolderFilter:
    """Which folders auto-tracking watches: those matching ``folders`` and
    neither matching ``exclude`` nor lying below a folder that does
    (``Trash`` excludes ``Trash/Old`` too)."""

    def __init__(self, settings: AutoTrack) -> None:
        self.include = [compile_folder(p) for p in settings.folders]
        self.exclude = [compile_folder(p) for p in settings.exclude]

    def __call__(self, folder: str) -> bool:
        if not any(p.match(folder) is not None for p in self.include):
            return False
        parts = folder.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return not any(p.match(prefix) is not None for p in self.exclude for prefix in prefixes)


@dataclass(frozen=True)
class Verdict:
    track: bool
    #: why, for logs, ``rules test`` and the seen table: "rule:NAME",
    #: "policy all", "never-track: a@b.example", "auto-reply: Auto-Submitted: auto-replied"...
    reason: str


class NeverTrack:
    """Addresses and ``@domains`` whose mail is never auto-tracked.

    ``@example.com`` also covers its subdomains (``mail.example.com``)."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.addresses: set[str] = set()
        self.domains: set[str] = set()
        for entry in entries:
            entry = entry.strip().lower()
            if entry.startswith("@"):
                self.domains.add(entry[1:])
            elif entry:
                self.addresses.add(entry)

    def __bool__(self) -> bool:
        return bool(self.addresses or self.domains)

    def __or__(self, other: NeverTrack) -> NeverTrack:
        out = NeverTrack()
        out.addresses = self.addresses | other.addresses
        out.domains = self.domains | other.domains
        return out

    def entry_for(self, address: str) -> str | None:
        """The list entry that covers *address*, or None."""
        address = address.lower()
        if address in self.addresses:
            return address
        domain = address.rpartition("@")[2]
        while domain:
            if domain in self.domains:
                return "@" + domain
            domain = domain.partition(".")[2]
        return None

    def blocks(self, sender: str | None, parties: Iterable[str], owner_addresses: Iterable[str]) -> str | None:
        """Why a message with these addresses is never auto-tracked, or None."""
        if not self:
            return None
        own = {a.lower() for a in owner_addresses}
        if sender and sender.lower() not in own:
            entry = self.entry_for(sender)
            if entry is not None:
                return f"never-track: sender {sender} ({entry})"
        others = {p.lower() for p in parties} - own
        if others and all(self.entry_for(p) is not None for p in others):
            return "never-track: every party is on the never-track list"
        return None


def auto_verdict(
    *,
    decision: Decision,
    policy: str,
    never: str | None,
    auto_reply: str | None,
    correlated: Callable[[], str | None],
    known: Callable[[], str | None],
) -> Verdict:
    """The auto-tracking verdict (see the module doc for the order).

    ``never``: :meth:`NeverTrack.blocks`' answer; ``auto_reply``: why the
    message looks machine-written (``auto_submitted_reason``) or None;
    ``correlated()``: the correlation method that finds its thread, or None;
    ``known()``: an address that resolves to a CRM record (not a user), or None.
    """
    if never is not None:
        return Verdict(False, never)
    if decision.action == "skip":
        return Verdict(False, f"rule:{decision.rule}")
    if decision.action == "track":
        return Verdict(True, f"rule:{decision.rule}")
    if auto_reply is not None:
        return Verdict(False, f"auto-reply: {auto_reply}")
    if policy == "none":
        return Verdict(False, "policy none")
    if policy == "all":
        return Verdict(True, "policy all")
    method = correlated()
    if method is not None:
        return Verdict(True, f"policy {policy}: reply to tracked mail ({method})")
    if policy == "known":
        address = known()
        if address is not None:
            return Verdict(True, f"policy known: {address} is a CRM record")
        return Verdict(False, "policy known: no reply to tracked mail, no party is a CRM record")
    return Verdict(False, "policy replies: not a reply to tracked mail")
