"""What real servers do that Radicale does not by default, on a real Radicale
with a layer in front: weak etags, and (below) logins and discovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailfiler.errors import SyncPreconditionFailed, SyncTargetUnavailable
from mailfiler.sync.dav import CalDavTarget, CardDavTarget
from mailfiler.sync.discovery import _PRINCIPAL
from tests.servers.radicale import DavUser, DigestGate, WeakEtagTransport, dav_user, radicale
from tests.store.helpers import Store
from tests.sync.helpers import Rig, crm_contact, crm_contacts, make_mailbox
from tests.sync.target_contract import item

__all__ = ["dav_user", "radicale"]


async def test_weak_etags_are_written_back_when_the_item_did_not_change(dav_user: DavUser) -> None:
    t = CardDavTarget(dav_user.url("crm-contacts"), **dav_user.target_kwargs(), wrap_transport=WeakEtagTransport().wrap)
    await t.open()
    await t.list()
    href, etag = await t.upload(item("contacts", "u1"), uid="u1")
    assert etag.startswith('W/"')
    assert await t.list() == {href: etag}
    # If-Match: W/"..." never matches strongly; the item is unchanged, so the write goes through
    new = await t.update(href, item("contacts", "u1", "Bo"), etag)
    assert new.startswith('W/"') and new != etag
    [got] = await t.get_multi([href])
    assert b"FN:Bo" in got.data
    # an etag that is no longer the item's: the 412 stands
    with pytest.raises(SyncPreconditionFailed):
        await t.update(href, item("contacts", "u1", "Stale"), etag)
    with pytest.raises(SyncPreconditionFailed):
        await t.delete(href, etag)
    await t.delete(href, new)
    assert await t.list() == {}
    await t.close()


async def test_the_engine_syncs_with_a_server_of_weak_etags(
    sqlite_store: Store, tmp_path: Path, dav_user: DavUser
) -> None:
    t = CardDavTarget(dav_user.url("crm-contacts"), **dav_user.target_kwargs(), wrap_transport=WeakEtagTransport().wrap)
    rig = Rig(sqlite_store.db, tmp_path, make_mailbox(), contacts_target=t)
    rec = crm_contact("bob", "Bob Smith", job_title="CEO")
    [r] = await rig.sync_ok("contacts")
    assert r.uploaded == 1
    [r] = await rig.sync_ok("contacts")
    assert r.quiet
    from mailfiler.sync.crm import ContactStore

    ContactStore().write(rec, {"job_title": "CTO"})
    [r] = await rig.sync_ok("contacts")
    assert r.updated_mailbox == 1 and r.skipped == 0
    [r] = await rig.sync_ok("contacts")
    assert r.quiet and crm_contacts()["Bob Smith"]["job_title"] == "CTO"
    await t.close()


# --- discovery: a server's or a user's URL instead of the collection's --------------------------


async def test_the_collection_is_found_from_the_server_url(
    sqlite_store: Store, tmp_path: Path, dav_user: DavUser
) -> None:
    base = dav_user.server.base_url + "/"
    t = CardDavTarget(base, **dav_user.target_kwargs())
    rig = Rig(sqlite_store.db, tmp_path, make_mailbox(), contacts_target=t)
    crm_contact("bob", "Bob Smith", job_title="CEO")
    [r] = await rig.sync_ok("contacts")
    # a new user has no address book: one is made in their home, and the items go there
    assert r.uploaded == 1 and r.location == base
    assert t.url == dav_user.url("mailfiler-contacts")
    assert len(list(dav_user.collection_dir("mailfiler-contacts").glob("*.vcf"))) == 1
    await t.close()
    # a later target of the same config (the daemon's next round) asks no more
    again = CardDavTarget(base, **dav_user.target_kwargs())
    assert again.url == dav_user.url("mailfiler-contacts")
    rig.contacts_target = again
    [r] = await rig.sync_ok("contacts")
    assert r.quiet
    await again.close()


async def test_the_first_address_book_of_the_home_is_taken(dav_user: DavUser) -> None:
    for name in ("work", "family"):
        made = CardDavTarget(dav_user.url(name), **dav_user.target_kwargs())
        await made.list()  # makes it
        await made.close()
    cal = CalDavTarget(dav_user.url("agenda"), **dav_user.target_kwargs())
    await cal.list()
    await cal.close()
    t = CardDavTarget(dav_user.server.base_url + f"/{dav_user.name}/", **dav_user.target_kwargs())
    assert await t.list() == {}
    assert t.url == dav_user.url("family")  # by URL: the same choice every time; the calendar is not one
    await t.close()


async def test_a_collection_of_the_other_kind_is_still_an_error(dav_user: DavUser) -> None:
    cal = CalDavTarget(dav_user.url("agenda"), **dav_user.target_kwargs())
    await cal.list()
    await cal.close()
    t = CardDavTarget(dav_user.url("agenda"), **dav_user.target_kwargs())
    with pytest.raises(SyncTargetUnavailable, match="is a calendar, not a carddav address book"):
        await t.list()
    await t.close()


async def test_the_well_known_url_is_followed(dav_user: DavUser) -> None:
    t = CalDavTarget(dav_user.server.base_url + "/", **dav_user.target_kwargs())
    principal = await t._href_prop(dav_user.server.base_url + "/.well-known/caldav", *_PRINCIPAL)
    assert principal == dav_user.server.base_url + f"/{dav_user.name}/"
    await t.close()


# --- logins ---------------------------------------------------------------------------------------


async def test_a_server_that_takes_digest_only(sqlite_store: Store, tmp_path: Path, dav_user: DavUser) -> None:
    gate = DigestGate({dav_user.name: dav_user.password})
    t = CardDavTarget(dav_user.url("crm-contacts"), **dav_user.target_kwargs(), wrap_transport=gate.wrap)
    rig = Rig(sqlite_store.db, tmp_path, make_mailbox(), contacts_target=t)
    crm_contact("bob", "Bob Smith", job_title="CEO")
    crm_contact("ann", "Ann Lee")
    [r] = await rig.sync_ok("contacts")
    assert r.uploaded == 2
    # Basic first (loopback), refused; the Digest challenge; then Digest on every request
    assert gate.schemes[:3] == ["basic", "none", "digest"] and set(gate.schemes[3:]) == {"digest"}
    [r] = await rig.sync_ok("contacts")
    assert r.quiet
    await t.close()


async def test_a_wrong_password_with_digest_is_a_clear_error(dav_user: DavUser) -> None:
    gate = DigestGate({dav_user.name: "not-the-password"})
    t = CardDavTarget(dav_user.url("crm-contacts"), **dav_user.target_kwargs(), wrap_transport=gate.wrap)
    with pytest.raises(SyncTargetUnavailable, match="refused the login"):
        await t.list()
    await t.close()
