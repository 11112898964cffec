"""What track by tag relies on in the fake Exchange, driven by exchangelib: a category set
with UpdateItem (SetItemField item:Categories) gives a new ChangeKey, a SyncFolderItems
Update carrying the categories asked for in AdditionalProperties (a read flag alone is a
ReadFlagChange), and a ModifiedEvent on a SubscribeToAllFolders stream; a walk from no
state reports every item as a Create with its categories."""

from __future__ import annotations

from typing import Any

from exchangelib import Account
from exchangelib.fields import FieldPath
from exchangelib.folders import Folder
from exchangelib.items import ID_ONLY
from exchangelib.items import Message as ExMessage
from exchangelib.properties import ModifiedEvent
from exchangelib.services import SubscribeToStreaming, SyncFolderItems

from tests.fakes.ews.test_ews_fake import ALICE, _stream, account, mime, server
from tests.servers.ews import EwsServer

__all__ = ["server"]  # the fixture


def _sync(acc: Account, folder_id: str, state: str | None) -> tuple[list[Any], str]:
    svc = SyncFolderItems(account=acc)
    cats = FieldPath(field=ExMessage.get_field_by_fieldname("categories"))
    got = list(svc.call(folder=Folder(root=acc.root, id=folder_id), shape=ID_ONLY, additional_fields={cats},
                        sync_state=state, ignore=None, max_changes_returned=100, sync_scope=None))  # fmt: skip
    return got, svc.sync_state


def test_a_category_change_is_a_sync_update_with_its_categories(server: EwsServer) -> None:
    server.create_folder(ALICE, "Projekt")
    tagged = server.deliver(ALICE, mime(1), "Projekt")
    other = server.deliver(ALICE, mime(2), "Projekt")
    server.set_categories(tagged, ["CRM", "Privat"])
    acc = account(server)
    folder_id = server.folder_id(ALICE, "Projekt")
    first, state = _sync(acc, folder_id, None)
    assert sorted((k, i.id, tuple(i.categories or ())) for k, i in first) == sorted(
        [("create", tagged, ("CRM", "Privat")), ("create", other, ())]
    )
    # Outlook sets a category (UpdateItem): a new ChangeKey, an Update with the categories
    item = next(iter(acc.fetch(ids=[(other, None)], only_fields=["categories"])))
    key = item.changekey
    item.categories = ["CRM:account:contoso"]
    item.save(update_fields=["categories"])
    assert item.changekey != key
    server.set_read(tagged)  # a read flag: no Update
    got, state = _sync(acc, folder_id, state)
    kinds = {(k, i.id if k == "update" else i[0].id) for k, i in got}
    assert kinds == {("update", other), ("read_flag_change", tagged)}
    update = next(i for k, i in got if k == "update")
    assert update.categories == ["CRM:account:contoso"]
    assert _sync(acc, folder_id, state)[0] == []


def test_a_category_change_anywhere_is_a_modified_event_on_an_all_folders_stream(server: EwsServer) -> None:
    server.create_folder(ALICE, "Projekt")
    item_id = server.deliver(ALICE, mime(3), "Projekt")
    server.hub.heartbeat = 0.2
    acc = account(server)
    subscription = SubscribeToStreaming(account=acc).get(folders=None, event_types=SubscribeToStreaming.EVENT_TYPES)
    server.set_categories(item_id, ["CRM"])
    server.stream_lifetime = 1.0  # the stream ends after a second with what it carried
    events = [e for n in _stream(acc, subscription) for e in n.events]
    modified = [e for e in events if isinstance(e, ModifiedEvent) and e.item_id is not None]
    assert [e.item_id.id for e in modified] == [item_id]
    assert modified[0].parent_folder_id.id == server.folder_id(ALICE, "Projekt")
