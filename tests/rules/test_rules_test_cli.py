"""``rules test`` explains correlation and auto-tracking: the final answer as
the daemon would give it, from a real store (SQLite and PostgreSQL) holding
mail tracked by the real tracker, read without writing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailfiler.cli.rules import rules_test_result
from mailfiler.config.schema import Config
from mailfiler.rules import RuleSet
from mailfiler.service.runtime import sync_config
from mailfiler.store import models as m
from tests.rules.helpers import ruleset
from tests.rules.test_apply import snapshot
from tests.store import conftest as store_conftest
from tests.store.helpers import Store, mailbox_config, make_message, track_raw

#: the store fixture of the store tests: every test here runs on SQLite and on PostgreSQL
store = store_conftest.store

RULES = """\
rules:
  - name: contoso-domains
    when: {from_domain: contoso.com}
    then: {regarding: 'account:contoso'}
  - name: client-folders
    when: {folder: 'Clients/{account}'}
    then:
      regarding: {entity: account, name: '{account}', create: true}
  - name: vacation-notices
    when: {auto_submitted: true, subject: 'vacation'}
    then: track
"""

RECORDS = [
    {"entity": "account", "key": "contoso", "name": "Contoso", "domains": ["contoso.com"]},
    {"entity": "account", "key": "fabrikam", "name": "Fabrikam", "domains": ["fabrikam.com"]},
    {"entity": "contact", "key": "olle", "name": "Olle", "emails": ["olle@example.org"]},
]

FOLDERS = {"Tracked/Fabrikam": "account:fabrikam", "Unfiled": None}


def _config(store: Store, tmp_path: Path, **mailbox: Any) -> Config:
    mb = {**mailbox_config("alice", "alice@example.com", tmp_path / "M", FOLDERS), **mailbox}
    return store.config(records=RECORDS, mailboxes=[mb], tracking={"never_track": ["@newsletter.example"]})


def _track_root(store: Store, cfg: Config) -> None:
    """<root@f> from Fabrikam, filed into Tracked/Fabrikam by the real tracker."""
    rt = sync_config(store.db, cfg)["alice"]
    raw = make_message("<root@f>", sender="erik@fabrikam.com", to=["alice@example.com"], subject="Offer")
    track_raw(store.tracker(cfg), rt, "Tracked/Fabrikam", "s1", raw)


def _reply(sender: str = "erik@fabrikam.com", *, subject: str = "Re: Offer", extra: str = "") -> bytes:
    raw = make_message("<reply@f>", sender=sender, to=["alice@example.com"], subject=subject)
    return raw.replace(b"Message-ID: <reply@f>", f"Message-ID: <reply@f>\nIn-Reply-To: <root@f>{extra}".encode())


def _test(cfg: Config, rules: RuleSet, raw: bytes, folder: str | None = None) -> dict[str, Any]:
    return rules_test_result(cfg, rules, raw, source="m.eml", mailbox="alice", folder=folder)


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    return ruleset(tmp_path, RULES)


def test_reply_to_tracked_mail_inherits_the_regarding(store: Store, tmp_path: Path, rules: RuleSet) -> None:
    cfg = _config(store, tmp_path)
    _track_root(store, cfg)
    before = snapshot()
    result = _test(cfg, rules, _reply())
    assert result["store"] == "read"
    assert result["correlation"]["method"] == "in-reply-to"
    assert result["correlation"]["activity"]["message_id"] == "<root@f>"
    assert result["correlation"]["activity"]["regarding"] == "account:fabrikam"
    assert result["auto_tracking"]["folder"] == "INBOX" and result["auto_tracking"]["watched"] is True
    assert result["verdict"] == {
        "tracked": True,
        "regarding": "account:fabrikam",
        "correlation": "in-reply-to",
        "reason": "policy replies: reply to tracked mail (in-reply-to)",
        "notes": [],
    }
    # read-only, and the caller's own binding of the models is back in place
    assert snapshot() == before
    assert m.database_proxy.obj is store.db


def test_not_a_reply_is_not_tracked_under_policy_replies(store: Store, tmp_path: Path, rules: RuleSet) -> None:
    cfg = _config(store, tmp_path)
    _track_root(store, cfg)
    result = _test(cfg, rules, make_message("<new@f>", sender="erik@fabrikam.com", subject="Hello"))
    assert result["correlation"] == {"method": None, "activity": None, "note": None}
    verdict = result["verdict"]
    assert (verdict["tracked"], verdict["reason"]) == (False, "policy replies: not a reply to tracked mail")


def test_a_rule_decides_before_correlation(store: Store, tmp_path: Path, rules: RuleSet) -> None:
    cfg = _config(store, tmp_path)
    _track_root(store, cfg)
    result = _test(cfg, rules, _reply("anna@contoso.com"))
    assert result["correlation"]["method"] == "in-reply-to"  # found, but the rule decides
    verdict = result["verdict"]
    assert (verdict["regarding"], verdict["correlation"]) == ("account:contoso", "rule:contoso-domains")
    assert verdict["reason"] == "rule:contoso-domains"


def test_never_track_beats_a_reply(store: Store, tmp_path: Path, rules: RuleSet) -> None:
    cfg = _config(store, tmp_path, never_track=["erik@fabrikam.com"])
    _track_root(store, cfg)
    result = _test(cfg, rules, _reply())
    assert result["auto_tracking"]["never_track"] == "never-track: sender erik@fabrikam.com (erik@fabrikam.com)"
    assert result["verdict"]["tracked"] is False
    assert result["verdict"]["reason"] == "never-track: sender erik@fabrikam.com (erik@fabrikam.com)"
    # the global list too, by domain
    news = make_message("<n@x>", sender="news@mail.newsletter.example", subject="News")
    assert _test(cfg, rules, news)["verdict"]["reason"] == (
        "never-track: sender news@mail.newsletter.example (@newsletter.example)"
    )


def test_auto_reply_not_tracked_unless_a_rule_tracks_it(store: Store, tmp_path: Path, rules: RuleSet) -> None:
    cfg = _config(store, tmp_path)
    _track_root(store, cfg)
    auto = _reply(subject="Out of office", extra="\nAuto-Submitted: auto-replied")
    verdict = _test(cfg, rules, auto)["verdict"]
    assert (verdict["tracked"], verdict["reason"]) == (False, "auto-reply: Auto-Submitted: auto-replied")
    # a rule that tracks auto-replies: tracked, and the thread gives the regarding
    vacation = _reply(subject="Re: Offer (vacation)", extra="\nAuto-Submitted: auto-replied")
    verdict = _test(cfg, rules, vacation)["verdict"]
    assert verdict["tracked"] is True and verdict["reason"] == "rule:vacation-notices"
    assert (verdict["regarding"], verdict["correlation"]) == ("account:fabrikam", "in-reply-to")


def test_tracked_folder_regarding_wins(store: Store, tmp_path: Path, rules: RuleSet) -> None:
    cfg = _config(store, tmp_path)
    _track_root(store, cfg)
    result = _test(cfg, rules, _reply("anna@contoso.com"), folder="Tracked/Fabrikam")
    assert result["auto_tracking"] is None
    assert result["verdict"]["tracked"] is True
    assert (result["verdict"]["regarding"], result["verdict"]["correlation"]) == ("account:fabrikam", "folder")
    assert result["verdict"]["reason"] == "Tracked/Fabrikam is a tracked folder: mail filed there is always tracked"
    # a tracked folder without a regarding: always tracked, the thread decides; never-track does not apply
    cfg = _config(store, tmp_path, never_track=["erik@fabrikam.com"])
    verdict = _test(cfg, rules, _reply(), folder="Unfiled")["verdict"]
    assert (verdict["tracked"], verdict["regarding"], verdict["correlation"]) == (
        True,
        "account:fabrikam",
        "in-reply-to",
    )


def test_rule_creating_a_record_says_so_and_creates_nothing(store: Store, tmp_path: Path, rules: RuleSet) -> None:
    cfg = _config(store, tmp_path, tracked_folders=[{"folder": "Clients/Åkesson AB"}])
    sync_config(store.db, cfg)
    before = snapshot()
    verdict = _test(cfg, rules, make_message("<k@x>", sender="asa@akesson.se"), folder="Clients/Åkesson AB")["verdict"]
    assert (verdict["regarding"], verdict["correlation"]) == ("account:akesson-ab", "rule:client-folders")
    assert verdict["notes"] == ["rule client-folders would create account:akesson-ab"]
    assert snapshot() == before


@pytest.mark.parametrize(
    ("policy", "sender", "tracked", "reason"),
    [
        ("known", "olle@example.org", True, "policy known: olle@example.org is a CRM record"),
        ("known", "nobody@example.net", False, "policy known: no reply to tracked mail, no party is a CRM record"),
        ("all", "nobody@example.net", True, "policy all"),
        ("none", "olle@example.org", False, "policy none"),
    ],
)
def test_policies(
    store: Store, tmp_path: Path, rules: RuleSet, policy: str, sender: str, tracked: bool, reason: str
) -> None:
    cfg = _config(store, tmp_path, auto_track={"policy": policy})
    sync_config(store.db, cfg)
    result = _test(cfg, rules, make_message("<p@x>", sender=sender, to=["alice@example.com"]))
    assert result["auto_tracking"]["policy"] == policy
    assert (result["verdict"]["tracked"], result["verdict"]["reason"]) == (tracked, reason)
    assert result["verdict"]["regarding"] is None


def test_unwatched_folder(store: Store, tmp_path: Path, rules: RuleSet) -> None:
    cfg = _config(store, tmp_path, auto_track={"policy": "all", "exclude": ["Archive"]})
    result = _test(cfg, rules, make_message("<u@x>"), folder="Archive/2023")
    assert result["auto_tracking"]["watched"] is False
    assert result["verdict"]["tracked"] is False
    assert result["verdict"]["reason"] == "auto-tracking does not watch Archive/2023 (auto_track.folders and exclude)"


def test_without_a_store_correlation_is_not_tried(tmp_path: Path, rules: RuleSet) -> None:
    cfg = Config(
        database=f"sqlite:///{tmp_path / 'none.db'}",
        state_dir=tmp_path / "state",
        mailboxes=[mailbox_config("alice", "alice@example.com", tmp_path / "M", FOLDERS)],  # type: ignore[list-item]
    )
    result = _test(cfg, rules, _reply())
    assert result["correlation"] == {
        "method": None,
        "activity": None,
        "note": "not tried: no store yet",
    }
    assert result["verdict"]["reason"] == "policy replies: not a reply to tracked mail"
    assert not (tmp_path / "none.db").exists()


def test_rules_test_and_the_daemon_agree_on_a_corpus(store: Store, tmp_path: Path, rules: RuleSet) -> None:
    """A corpus (threads, rule hits, a rule that creates its record, mail nothing decides)
    through ``rules test`` and then through the daemon's tracker, message by message, in a
    tracked folder without a regarding and in the Inbox: the same regarding and method
    (both ask the one planner)."""
    from mailfiler.tracking.context import watched_folder
    from mailfiler.tracking.parse import parse_message
    from tests.mailgen import realistic_message

    cfg = _config(store, tmp_path)
    rt = sync_config(store.db, cfg)["alice"]
    tracker = store.tracker(cfg)
    tracker.rules = rules
    _track_root(store, cfg)
    corpus = [realistic_message(i, domain_pool=("contoso.com", "fabrikam.com", "example.org")) for i in range(24)]
    corpus += [_reply(), _reply("bob@contoso.com").replace(b"<reply@f>", b"<reply2@f>")]
    compared = 0
    for i, raw in enumerate(corpus):
        for folder in ("Unfiled", None):
            if folder is None and i % 2:
                continue
            verdict = _test(cfg, rules, raw, folder=folder)["verdict"]
            if not verdict["tracked"]:
                continue
            fctx = rt.folders[folder] if folder is not None else watched_folder("INBOX")
            assert tracker.track(rt.ctx, fctx, f"c{i}-{folder}", parse_message(raw)).event == "tracked"
            act = m.Activity.get(m.Activity.message_id == parse_message(raw).message_id)
            stored = (act.regarding.ref if act.regarding_id else None, act.correlation)
            assert (verdict["regarding"], verdict["correlation"]) == stored, (i, folder, verdict)
            compared += 1
            break
    assert compared >= 20
    methods = {a.correlation for a in m.Activity.select()}
    assert {"rule:contoso-domains", "folder"} <= methods and methods & {"in-reply-to", "references"}


def test_rules_apply_dry_run_rules_test_and_the_daemon_agree_on_a_corpus(
    store: Store, tmp_path: Path, rules: RuleSet
) -> None:
    """The corpus above, in the mailbox's Maildir, decided three ways by the one planner:
    ``rules test`` (before tracking), the daemon's tracker, and ``rules apply --dry-run``
    (reading each message again) after every regarding but the folder's was cleared, as
    for mail tracked before the rules.  All three agree, message by message; the real
    ``rules apply`` then writes exactly what the daemon wrote."""
    import asyncio

    from mailfiler.tracking.context import watched_folder
    from mailfiler.tracking.parse import parse_message
    from mailfiler.tracking.reapply import reapply
    from tests.mailgen import drop_into_maildir, maildirpp_folder_dir, realistic_message

    cfg = _config(store, tmp_path)
    rt = sync_config(store.db, cfg)["alice"]
    tracker = store.tracker(cfg)
    tracker.rules = rules
    _track_root(store, cfg)
    corpus = [realistic_message(i, domain_pool=("contoso.com", "fabrikam.com", "example.org")) for i in range(24)]
    corpus += [_reply(), _reply("bob@contoso.com").replace(b"<reply@f>", b"<reply2@f>")]
    decided: dict[str, tuple[str | None, str | None]] = {}
    for i, raw in enumerate(corpus):
        for folder in ("Unfiled", None):
            if folder is None and i % 2:
                continue
            verdict = _test(cfg, rules, raw, folder=folder)["verdict"]
            if not verdict["tracked"]:
                continue
            # in the Maildir, under the id the tracker records, so that rules apply reads it again
            sid = f"c{i}"
            drop_into_maildir(maildirpp_folder_dir(tmp_path / "M", folder or "INBOX"), raw, name=sid, fsync=False)
            fctx = rt.folders[folder] if folder is not None else watched_folder("INBOX")
            msg = parse_message(raw)
            assert tracker.track(rt.ctx, fctx, sid, msg).event == "tracked"
            act = m.Activity.get(m.Activity.message_id == msg.message_id)
            decided[msg.message_id] = (act.regarding.ref if act.regarding else None, act.correlation)
            assert (verdict["regarding"], verdict["correlation"]) == decided[msg.message_id], (i, folder)
            break
    assert len(decided) >= 20
    assert sum(1 for ref, _ in decided.values() if ref is not None) >= 10
    # mail tracked before the rules: nothing but the folder decided its regarding
    m.Activity.update(regarding=None, correlation=None, correlated_activity=None).where(
        m.Activity.correlation != "folder"
    ).execute()
    before = snapshot()
    dry = asyncio.run(reapply(store.db, cfg, rules, dry_run=True))
    assert snapshot() == before  # a dry run writes nothing
    by_id = {r.message_id: r for r in dry}
    for message_id, (ref, method) in decided.items():
        r = by_id[message_id]
        assert r.read_from is not None, r  # read again, headers and all
        assert (r.new_regarding, r.new_correlation) == (ref, method), r
        assert r.result == ("would-change" if ref is not None else "kept"), r
    real = asyncio.run(reapply(store.db, cfg, rules))
    assert [(r.message_id, r.new_regarding, r.new_correlation) for r in real] == [
        (r.message_id, r.new_regarding, r.new_correlation) for r in dry
    ]
    for message_id, (ref, method) in decided.items():
        act = m.Activity.get(m.Activity.message_id == message_id)
        assert (act.regarding.ref if act.regarding else None, act.correlation) == (ref, method)
