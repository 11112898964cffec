"""Rules deciding the regarding inside the tracking transaction (SQLite and
PostgreSQL): by key, by a folder capture with record creation, contacts for
unknown senders, categories; the folder's own regarding still wins, and a
rule beats correlation."""

from __future__ import annotations

from pathlib import Path

from mailfiler.rules import load_rules
from mailfiler.service.runtime import sync_config
from mailfiler.store import models as m
from tests.store.helpers import Store, mailbox_config, make_message, track_raw

RULES = """\
rules:
  - name: case-number
    when: {subject: '(?P<number>CAS-\\d{5})'}
    then:
      regarding: {entity: case, key: '{number}', create: true, fields: {name: 'Case {number}'}}
      categories: [support]
  - name: client-folders
    when: {folder: 'Kunder/{account}'}
    then:
      regarding: {entity: account, name: '{account}', create: true, fields: {domains: ['{from.domain}']}}
      create_contact: {entity: contact, parent_by_domain: true}
"""


def _setup(store: Store, tmp_path: Path):
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES, encoding="utf-8")
    cfg = store.config(
        records=[{"entity": "account", "key": "contoso", "name": "Contoso", "domains": ["contoso.com"]}],
        rules=[rules_file],
        mailboxes=[
            mailbox_config(
                "alice",
                "alice@example.com",
                tmp_path / "M",
                {"Clients/Contoso": "account:contoso", "Unfiled": None, "Kunder/Åkesson AB": None},
            )
        ],
    )
    rt = sync_config(store.db, cfg)["alice"]
    tracker = store.tracker(cfg)
    tracker.rules = load_rules(cfg.rules, known_entities=cfg.entity_types())
    return tracker, rt


def _activity(message_id: str) -> m.Activity:
    return m.Activity.get(m.Activity.message_id == message_id)


def test_case_number_rule_creates_the_case(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path)
    track_raw(tracker, rt, "Unfiled", "s1", make_message("<c@x>", subject="Problem with CAS-01234 again"))
    act = _activity("<c@x>")
    assert act.regarding.ref == "case:CAS-01234"
    assert act.regarding.name == "Case CAS-01234"
    assert act.correlation == "rule:case-number"
    assert act.categories == "support"


def test_folder_capture_creates_account_and_contact(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path)
    raw = make_message("<k@x>", sender="Åsa Berg <asa@akesson.se>", subject="Offert")
    track_raw(tracker, rt, "Kunder/Åkesson AB", "s1", raw)
    act = _activity("<k@x>")
    assert act.regarding.ref == "account:akesson-ab"
    assert act.regarding.name == "Åkesson AB"
    contact = m.Record.get((m.Record.entity == "contact") & (m.Record.key == "asa@akesson.se"))
    assert contact.name == "Åsa Berg"
    # the account was created (with the sender's domain) before the contact looked for its parent
    assert contact.parent_id == act.regarding_id
    sender = m.ActivityParty.get((m.ActivityParty.activity == act) & (m.ActivityParty.role == "from"))
    assert sender.record_id == contact.id
    # a second message from the same folder reuses the account
    track_raw(tracker, rt, "Kunder/Åkesson AB", "s2", make_message("<k2@x>", sender="asa@akesson.se"))
    assert m.Record.select().where(m.Record.entity == "account").count() == 2


def test_folder_regarding_beats_rules(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path)
    track_raw(tracker, rt, "Clients/Contoso", "s1", make_message("<f@x>", subject="About CAS-01234"))
    act = _activity("<f@x>")
    assert (act.correlation, act.regarding.ref) == ("folder", "account:contoso")
    assert not m.Record.select().where(m.Record.entity == "case").exists()


def test_rule_beats_correlation(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path)
    track_raw(tracker, rt, "Clients/Contoso", "s1", make_message("<root@x>"))
    reply = make_message("<r@x>", subject="Re: CAS-05555").replace(
        b"Message-ID: <r@x>", b"Message-ID: <r@x>\nIn-Reply-To: <root@x>"
    )
    track_raw(tracker, rt, "Unfiled", "s2", reply)
    act = _activity("<r@x>")
    assert (act.correlation, act.regarding.ref) == ("rule:case-number", "case:CAS-05555")


def test_records_a_batch_creates_are_seen_by_its_next_messages(store: Store, tmp_path: Path) -> None:
    """In one batch (one transaction, addresses resolved once): the account and contact
    the first message's rule creates are the records the next messages resolve to, and
    a third party of the first message, resolved before the creation, is resolved again."""
    from mailfiler.tracking.batch import Item, track_batch
    from mailfiler.tracking.parse import parse_message
    from mailfiler.tracking.pipeline import Outcome

    tracker, rt = _setup(store, tmp_path)
    folder = rt.folders["Kunder/Åkesson AB"]
    raws = [
        make_message("<b1@x>", sender="Åsa Berg <asa@akesson.se>", to=["alice@example.com", "bo@akesson.se"]),
        make_message("<b2@x>", sender="bo@akesson.se", to=["alice@example.com"]),
        make_message("<b3@x>", sender="asa@akesson.se", to=["alice@example.com"]),
    ]
    items = [Item(rt.ctx, folder, f"s{i}", parse_message(raw)) for i, raw in enumerate(raws)]
    assert all(isinstance(r, Outcome) for r in track_batch(tracker, items))
    account = m.Record.get((m.Record.entity == "account") & (m.Record.key == "akesson-ab"))
    asa = m.Record.get((m.Record.entity == "contact") & (m.Record.key == "asa@akesson.se"))
    bo = m.Record.get((m.Record.entity == "contact") & (m.Record.key == "bo@akesson.se"))

    def party(mid: str, address: str) -> int | None:
        return m.ActivityParty.get(
            (m.ActivityParty.activity == _activity(mid)) & (m.ActivityParty.address == address)
        ).record_id

    # bo's address resolved to the new account by its domain in the first message, then
    # to his own contact (created by the second message) in the later ones
    assert party("<b1@x>", "bo@akesson.se") == account.id
    assert party("<b2@x>", "bo@akesson.se") == bo.id
    assert party("<b3@x>", "asa@akesson.se") == asa.id
