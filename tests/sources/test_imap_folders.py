"""Folder names over IMAP: modified UTF-7, quoting, wildcards, separators."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from mailfiler.errors import FolderMissing
from mailfiler.sources.imap import ImapSettings, ImapSource
from tests.servers.dovecot import DovecotServer, ImapUser, start_dovecot

AWKWARD = [
    "Kunder/Åkesson AB",
    'Pro "q" x',
    "Back\\slash",
    "a * b",
    "50% off",
    "Projekt & Co/2024",
    "日本語/Post 📬",
    "  leading spaces",
]


@pytest.fixture
async def source(imap_user: ImapUser) -> AsyncIterator[ImapSource]:
    src = ImapSource(ImapSettings(**imap_user.settings_kwargs(), timeout=10))
    await src.open()
    try:
        yield src
    finally:
        await src.close()


@pytest.mark.parametrize("folder", AWKWARD)
async def test_awkward_names_are_created_listed_and_read(source: ImapSource, imap_user: ImapUser, folder: str) -> None:
    await source.create_folder(folder)
    assert await source.folder_exists(folder)
    assert folder in await source.list_folders()
    with imap_user.client() as client:
        uid = client.append(folder, b"Subject: hi\r\nMessage-ID: <n@x>\r\n\r\nbody\r\n")
    listing = await source.list_messages(folder)
    (sid,) = listing.messages
    assert sid.endswith(f":{uid}")
    assert await source.fetch(folder, sid) == b"Subject: hi\r\nMessage-ID: <n@x>\r\n\r\nbody\r\n"


async def test_the_server_stores_modified_utf7(source: ImapSource, imap_user: ImapUser) -> None:
    await source.create_folder("Kunder/Åkesson AB")
    with imap_user.client() as client:
        assert "Kunder/&AMU-kesson AB" in client.folders()
    # doveadm speaks UTF-8: the name decodes to what the user typed
    listed = imap_user.server.doveadm("mailbox", "list", "-u", imap_user.name).stdout.decode()
    assert "Kunder/Åkesson AB" in listed.splitlines()


async def test_a_folder_made_by_a_client_in_utf8_is_found(source: ImapSource, imap_user: ImapUser) -> None:
    imap_user.create_folder("Kunder/Åkesson AB")  # doveadm, UTF-8
    assert await source.folder_exists("Kunder/Åkesson AB")
    assert "Kunder/Åkesson AB" in await source.list_folders()


async def test_a_parent_that_only_holds_children_is_not_a_folder(source: ImapSource) -> None:
    await source.create_folder("Kunder/Åkesson AB")
    assert "Kunder" not in await source.list_folders()
    assert not await source.folder_exists("Kunder")
    with pytest.raises(FolderMissing):
        await source.list_messages("Kunder")


async def test_list_wildcards_in_a_name_match_nothing_else(source: ImapSource) -> None:
    await source.create_folder("50X off")
    await source.create_folder("ab")
    assert not await source.folder_exists("50% off")
    assert not await source.folder_exists("a*")
    await source.create_folder("50% off")
    assert await source.folder_exists("50% off")


async def test_inbox_is_case_insensitive(source: ImapSource) -> None:
    assert await source.folder_exists("inbox")
    assert (await source.list_messages("Inbox")).messages == {}


async def test_created_folders_are_subscribed(source: ImapSource, imap_user: ImapUser) -> None:
    await source.create_folder("Tracked/Contoso")
    with imap_user.client() as client:
        _, lines = client.imap.lsub()
    assert any(b"Tracked/Contoso" in line for line in lines if isinstance(line, bytes))


@pytest.fixture(scope="module")
def dot_dovecot() -> Iterator[DovecotServer]:
    yield from start_dovecot(tls=False, separator=".")


async def test_a_server_with_dot_separator(dot_dovecot: DovecotServer) -> None:
    user = dot_dovecot.add_user()
    src = ImapSource(ImapSettings(**user.settings_kwargs(), timeout=10))
    await src.open()
    try:
        assert src.separator == "."
        await src.create_folder("Kunder/Åkesson AB")
        assert "Kunder/Åkesson AB" in await src.list_folders()
        with user.client() as client:
            assert "Kunder.&AMU-kesson AB" in client.folders()
            client.append("Kunder/Åkesson AB".replace("/", "."), b"Subject: dot\r\n\r\nx\r\n")
        assert len((await src.list_messages("Kunder/Åkesson AB")).messages) == 1
        # a "." inside a name cannot be said to this server
        assert not await src.folder_exists("v1.2/notes")
        with pytest.raises(FolderMissing, match="separator"):
            await src.list_messages("v1.2/notes")
    finally:
        await src.close()
        dot_dovecot.remove_user_mail(user.name)
