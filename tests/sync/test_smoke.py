from __future__ import annotations

from tests.store.helpers import Store
from tests.sync.helpers import Rig, crm_contact, crm_contacts, make_mailbox


async def test_contact_round_trip(store: Store, tmp_path) -> None:
    rig = Rig(store.db, tmp_path, make_mailbox())
    crm_contact("bob", "Bob Smith", emails=["bob@contoso.com"], job_title="CEO")
    [contacts, calendar] = await rig.sync_ok()
    assert contacts.uploaded == 1
    assert rig.by_name()["Bob Smith"]["job_title"] == "CEO"
    rig.edit_contact(rig.file_of("Bob Smith"), job_title="CTO")
    [contacts] = await rig.sync_ok("contacts")
    assert contacts.updated_crm == 1
    assert crm_contacts()["Bob Smith"]["job_title"] == "CTO"
    [contacts] = await rig.sync_ok("contacts")
    assert contacts.changes == 0
