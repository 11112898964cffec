"""The whole pipeline on PostgreSQL: two daemons, two configs, one shared store.

Each daemon manages its own mailboxes; a message both of them see is one
activity with a location in each mailbox, and neither daemon retires the
other's mailboxes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import E2EEnv, locations
from tests.mailgen import malformed_corpus, message_id_for, realistic_message

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture
def two_worlds(tmp_path: Path, fresh_postgres_url: str) -> Iterator[tuple[E2EEnv, E2EEnv]]:
    a, b = E2EEnv(tmp_path / "host-a"), E2EEnv(tmp_path / "host-b")
    for world in (a, b):
        world.root.mkdir()
        world.database = fresh_postgres_url
    try:
        yield a, b
    finally:
        a.close()
        b.close()
    for world in (a, b):
        problems = world.unexpected_problems()
        assert not problems, "a daemon logged errors:\n" + "\n".join(problems)


def test_two_daemons_share_one_postgresql_store(two_worlds: tuple[E2EEnv, E2EEnv]) -> None:
    a, b = two_worlds
    a.add_mailbox("alice", "alice@example.com", [("Tracked/Contoso", "account:contoso")])
    a.write_config()
    b.add_mailbox("bob", "bob@example.com", [("Kunder/Åkesson AB", None), ("Tracked/Fabrikam", "account:fabrikam")])
    b.write_config()
    da, db = a.start_daemon(), b.start_daemon()

    shared = realistic_message(0, seed=77)
    mid = message_id_for(0, seed=77)
    a.drop("alice", "Tracked/Contoso", shared)
    a.wait_activity(mid, pred=lambda act: len(act["locations"]) == 1)
    b.drop("bob", "Kunder/Åkesson AB", shared)
    act = a.wait_activity(mid, pred=lambda act: len(act["locations"]) == 2)
    # bob's folder has no regarding: alice's folder decided, and it stays
    assert act["regarding"] == "account:contoso"
    assert sorted(locations(act)) == [("alice", "Tracked/Contoso"), ("bob", "Kunder/Åkesson AB")]

    # bob files it into a folder with another record: first filed (alice) wins, as in Dynamics
    b.drop("bob", "Tracked/Fabrikam", shared)
    act = a.wait_activity(mid, pred=lambda act: len(act["locations"]) == 3)
    assert act["regarding"] == "account:contoso"

    for i in range(1, 21):
        (a if i % 2 else b).drop(
            "alice" if i % 2 else "bob",
            "Tracked/Contoso" if i % 2 else "Tracked/Fabrikam",
            realistic_message(i, seed=77),
        )
    acts = a.wait_activities(lambda acts: len(acts) == 21)
    assert len({x["message_id"] for x in acts}) == 21

    # each daemon keeps only its own mailboxes active, whatever order they started in
    status = a.status()
    assert sorted(m["name"] for m in status["mailboxes"]) == ["alice", "bob"]
    assert len(status["daemons"]) >= 1

    for daemon in (da, db):
        code, _ = daemon.terminate()
        assert code == 0


def test_malformed_mail_on_postgresql(two_worlds: tuple[E2EEnv, E2EEnv]) -> None:
    a, _ = two_worlds
    a.add_mailbox("alice", "alice@example.com", [("Tracked/Contoso", "account:contoso")])
    a.write_config()
    corpus = malformed_corpus()
    for data in corpus.values():
        a.drop("alice", "Tracked/Contoso", data)
    res = a.cli("once", "--json")
    [summary] = [r for r in json.loads(res.stdout)["alice"] if r["kind"] == "tracked"]
    assert summary["new"] + summary["shunted"] == len(corpus)
    shunts = json.loads(a.cli("shunt", "list", "--json").stdout)
    # only what is not mail at all is shunted; the rest is stored despite NULs and 8-bit bytes
    assert {s["reason"] for s in shunts} <= {"empty-message", "not-a-message"}
    assert summary["shunted"] <= 4
    # some corpus entries share a Message-ID: never more activities than messages tracked
    assert 0 < a.status()["activities"] <= summary["new"]
