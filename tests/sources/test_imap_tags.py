"""Track by tag's IMAP side against Dovecot (sources/imaptags.py): what a tag pass
sends (one command when nothing changed, with CONDSTORE), a new UIDVALIDITY, and
mailfiler's own mark keywords.  The backend-neutral contract is
tests/contract/source_contract.py::test_tag_changes."""

from __future__ import annotations

import time

from mailfiler.sources.base import TagQuery
from mailfiler.sources.imap import ImapSettings, ImapSource
from tests.servers.dovecot import ImapUser
from tests.sources.test_imap_catchup import Commands, commands  # noqa: F401 - the fixture

QUERY = TagQuery(frozenset({"CRM", "CRM-untrack"}), ("CRM:",))


def msg(n: int) -> bytes:
    return f"Subject: {n}\r\nMessage-ID: <t{n}@x.example>\r\n\r\nbody {n}\r\n".encode()


async def tag_pass(source: ImapSource, cursors: dict[str, str | None]) -> dict[str, dict[str, set[str]]]:
    out: dict[str, dict[str, set[str]]] = {}
    async for delta in source.tag_changes(cursors, QUERY):
        if delta.changes:
            out[delta.folder] = {c.source_id: set(c.tags) for c in delta.changes}
        if delta.token is not None:
            cursors[delta.folder] = delta.token
    return out


def store_keywords(user: ImapUser, folder: str, uid: int, *names: str) -> None:
    with user.client() as admin:
        admin.select(folder)
        typ, _ = admin.imap.uid("STORE", str(uid), "+FLAGS", f"({' '.join(names)})")
        assert typ == "OK"


async def test_an_idle_pass_is_a_command_or_two(imap_user: ImapUser, commands: Commands) -> None:  # noqa: F811
    for folder in ("Projekt", "Archiv/2024", "Kunder/Åkesson AB"):
        imap_user.create_folder(folder)
    with imap_user.client() as admin:
        uid = admin.append("Projekt", msg(1))
    store_keywords(imap_user, "Projekt", uid, "CRM")
    source = ImapSource(ImapSettings(**imap_user.settings_kwargs()))
    await source.open()
    try:
        cursors: dict[str, str | None] = {}
        assert list((await tag_pass(source, cursors))["Projekt"].values()) == [{"CRM"}]
        commands.clear()
        assert await tag_pass(source, cursors) == {}
        # LIST-STATUS, and an EXAMINE of the folder the connection has selected (its STATUS is the session's view)
        assert [c.split(" ", 1)[0] for c in commands.sent] in (["LIST"], ["LIST", "EXAMINE"])
        # a tag set: one folder looked at, with CHANGEDSINCE
        with imap_user.client() as admin:
            two = admin.append("Archiv/2024", msg(2))
        store_keywords(imap_user, "Archiv/2024", two, "CRM:account:akesson")
        commands.clear()
        got = await tag_pass(source, cursors)
        assert list(got) == ["Archiv/2024"] and list(got["Archiv/2024"].values()) == [{"CRM:account:akesson"}]
        assert any("CHANGEDSINCE" in c for c in commands.sent)
        assert not commands.named("UID SEARCH")
    finally:
        await source.close()


async def test_own_marks_never_match(imap_user: ImapUser) -> None:
    imap_user.create_folder("Projekt")
    with imap_user.client() as admin:
        uid = admin.append("Projekt", msg(1))
    store_keywords(imap_user, "Projekt", uid, "$Tracked")
    # even a tag named like the mark keyword: mailfiler's own marks never track
    source = ImapSource(ImapSettings(**imap_user.settings_kwargs(), keywords=("$Tracked", "$TrackFailed")))
    await source.open()
    try:
        query = TagQuery(frozenset({"$Tracked", "CRM"}), ())
        found = [d async for d in source.tag_changes({}, query) if d.changes]
        assert found == []
    finally:
        await source.close()


async def test_a_new_uidvalidity_is_looked_at_afresh(imap_user: ImapUser) -> None:
    imap_user.create_folder("Projekt")
    with imap_user.client() as admin:
        uid = admin.append("Projekt", msg(1))
    store_keywords(imap_user, "Projekt", uid, "CRM")
    source = ImapSource(ImapSettings(**imap_user.settings_kwargs()))
    await source.open()
    try:
        cursors: dict[str, str | None] = {}
        first = await tag_pass(source, cursors)
        imap_user.server.doveadm("mailbox", "delete", "-s", "-u", imap_user.name, "Projekt")
        time.sleep(1.1)  # Dovecot's UIDVALIDITY is a clock: never the same within a second
        imap_user.create_folder("Projekt")
        with imap_user.client() as admin:
            again = admin.append("Projekt", msg(1))
        store_keywords(imap_user, "Projekt", again, "CRM")
        second = await tag_pass(source, cursors)
        (old,), (new,) = first["Projekt"], second["Projekt"]
        assert old.split(":")[0] != new.split(":")[0]  # the same message, a new generation
        assert await tag_pass(source, cursors) == {}
    finally:
        await source.close()
