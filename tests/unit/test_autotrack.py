"""The auto-tracking verdict, the never-track lists and the watched-folder filter."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mailfiler.config.schema import AutoTrack, Mailbox
from mailfiler.rules import Decision
from mailfiler.tracking.autotrack import FolderFilter, NeverTrack, auto_verdict

OWNER = {"alice@example.com"}


def verdict(policy: str = "replies", *, action=None, never=None, auto=None, method=None, known=None, calls=None):
    calls = calls if calls is not None else []

    def correlated():
        calls.append("correlated")
        return method

    def is_known():
        calls.append("known")
        return known

    return auto_verdict(
        decision=Decision(action=action, rule="r1" if action else None),
        policy=policy,
        never=never,
        auto_reply=auto,
        correlated=correlated,
        known=is_known,
    )


@pytest.mark.parametrize(
    ("policy", "method", "known", "track"),
    [
        ("none", "in-reply-to", "bob@contoso.com", False),
        ("replies", None, "bob@contoso.com", False),
        ("replies", "references", None, True),
        ("known", None, "bob@contoso.com", True),
        ("known", None, None, False),
        ("known", "token", None, True),
        ("all", None, None, True),
    ],
)
def test_policies(policy: str, method: str | None, known: str | None, track: bool) -> None:
    assert verdict(policy, method=method, known=known).track is track


def test_order_never_track_then_rules_then_auto_replies_then_policy() -> None:
    # a never-track sender is not tracked even when a rule says track
    v = verdict("all", action="track", never="never-track: sender x@y.example (@y.example)")
    assert (v.track, v.reason) == (False, "never-track: sender x@y.example (@y.example)")
    # a rule's skip beats the policy; a rule's track beats an auto-reply
    assert verdict("all", action="skip").reason == "rule:r1"
    assert verdict("none", action="track", auto="Auto-Submitted: auto-replied").track is True
    # an auto-reply is skipped even when it is a reply to tracked mail
    v = verdict("all", auto="Auto-Submitted: auto-replied", method="in-reply-to")
    assert (v.track, v.reason) == (False, "auto-reply: Auto-Submitted: auto-replied")


def test_store_questions_are_asked_only_when_needed() -> None:
    calls: list[str] = []
    verdict("all", calls=calls)
    verdict("replies", action="skip", calls=calls)
    assert calls == []
    verdict("replies", method="in-reply-to", calls=calls)
    assert calls == ["correlated"]
    calls.clear()
    verdict("known", method="in-reply-to", calls=calls)
    assert calls == ["correlated"]  # a reply needs no party lookup


def test_never_track_lists() -> None:
    never = NeverTrack(["@family.example", "Doctor@Clinic.example"]) | NeverTrack(["@example.com"])
    assert never.entry_for("mum@family.example") == "@family.example"
    assert never.entry_for("x@mail.family.example") == "@family.example"  # subdomains too
    assert never.entry_for("x@notfamily.example") is None
    assert never.entry_for("doctor@clinic.example") == "doctor@clinic.example"
    # the sender is listed
    assert never.blocks("mum@family.example", ["alice@example.com"], OWNER)
    # every other party is listed: mail to colleagues only
    assert never.blocks("alice@example.com", ["bob@example.com", "carol@example.com"], OWNER)
    # a client among the parties: tracked
    assert never.blocks("alice@example.com", ["bob@example.com", "x@contoso.com"], OWNER) is None
    assert never.blocks("x@contoso.com", ["mum@family.example", "x@contoso.com"], OWNER) is None
    # the owner's own address never counts, even when its domain is listed
    assert NeverTrack(["@example.com"]).blocks("alice@example.com", ["x@contoso.com"], OWNER) is None
    assert not NeverTrack() and NeverTrack().blocks("a@b.c", ["a@b.c"], OWNER) is None


@pytest.mark.parametrize(
    ("folder", "watched"),
    [
        ("INBOX", True),
        ("Clients/Contoso", True),
        ("Sent", True),
        ("Trash", False),
        ("trash", False),
        ("Trash/Old", False),
        ("Junk E-mail", False),
        ("Drafts", False),
        ("Papperskorgen", False),
        ("Roskaposti", False),
    ],
)
def test_default_folder_filter(folder: str, watched: bool) -> None:
    assert FolderFilter(AutoTrack())(folder) is watched


def test_folder_filter_patterns() -> None:
    only = FolderFilter(AutoTrack(folders=["INBOX", "Clients/**"], exclude=["Clients/Old"]))
    assert only("INBOX") and only("Clients/Contoso") and only("Clients/Contoso/2026")
    assert not only("Sent") and not only("Clients/Old") and not only("Clients/Old/2019")
    assert not FolderFilter(AutoTrack(folders=[]))("INBOX")


@pytest.mark.parametrize("entry", ["@", "bob", "@a@b", "bob@", "@x/y"])
def test_bad_never_track_entries_are_config_errors(entry: str) -> None:
    with pytest.raises(ValidationError, match="never_track entry"):
        Mailbox(name="a", owner="a@example.com", maildir="/m", never_track=[entry])


def test_bad_folder_patterns_are_config_errors() -> None:
    with pytest.raises(ValidationError, match="whole segment"):
        AutoTrack(folders=["Clients/**x"])
