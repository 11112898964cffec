"""The ManageSieve client and the Sieve backend against a real Dovecot with
Pigeonhole: TLS and login, reading scripts, writing mailfiler's script and
its include, the user's own rules surviving every apply, broken scripts
reported and never overwritten, and mail delivered over LMTP filed by the
rule mailfiler wrote."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailfiler.errors import ServerRulesBroken, ServerRulesUnavailable, ServerRulesUnsupported
from mailfiler.sources.inboxrules import Route
from mailfiler.sources.sieve.backend import SieveBackend
from mailfiler.sources.sieve.managesieve import ManageSieve, SieveNo, SieveSettings
from mailfiler.sources.sieve.sievewrite import is_ours
from tests.servers.dovecot import DovecotServer, ImapUser, require_sieve, start_dovecot

pytestmark = pytest.mark.dovecot
T = TypeVar("T")

USER_SCRIPT = """\
require ["fileinto", "imap4flags", "copy"];
# rule:[Lists]
if exists "list-id" {
    fileinto "Lists";
}
# rule:[Boss forward]
if address :domain :is "from" "contoso.com" {
    redirect :copy "boss@example.com";
}
"""
CONTOSO = Route("Tracked/Contoso", from_domains=("contoso.com",))


def settings(user: ImapUser, **kw: object) -> SieveSettings:
    server = user.server
    require_sieve(server)
    assert server.tls is not None
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.sieve_port,
        "username": user.name,
        "password": user.password,
        "ca_file": str(server.tls.ca_file),
        "timeout": 10,
        "connect_timeout": 10,
    }
    base.update(kw)
    return SieveSettings(**base)  # type: ignore[arg-type]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _scripts(s: SieveSettings) -> dict[str, tuple[bool, str]]:
    async with ManageSieve(s) as ms:
        return {name: (active, await ms.get_script(name)) for name, active in await ms.list_scripts()}


def scripts(user: ImapUser) -> dict[str, tuple[bool, str]]:
    return run(_scripts(settings(user)))


async def _put(s: SieveSettings, name: str, text: str, active: bool = False) -> None:
    async with ManageSieve(s) as ms:
        await ms.put_script(name, text)
        if active:
            await ms.set_active(name)


def put(user: ImapUser, name: str, text: str, *, active: bool = False) -> None:
    run(_put(settings(user), name, text, active))


def apply(user: ImapUser, routes: list[Route]) -> list[tuple[str, str]]:
    backend = SieveBackend(settings(user))

    async def go() -> list[tuple[str, str]]:
        plan = await backend.plan(routes)
        await backend.apply(plan)
        return [(c.op, c.name) for c in plan.changes]

    return run(go())


# -- the client ------------------------------------------------------------------------------


def test_client_starttls_verified_and_the_script_commands(imap_user: ImapUser) -> None:
    name = 'Åkesson "quoted" \\ script'
    text = 'require "fileinto";\r\n# ünïcode "quotes" \\ and {braces}\r\nfileinto "Kunder/Åkesson AB";\r\n'

    async def go() -> None:
        async with ManageSieve(settings(imap_user)) as ms:
            assert "include" in ms.sieve_extensions and "Pigeonhole" in ms.implementation
            assert await ms.list_scripts() == []
            assert await ms.check_script(text) == []
            await ms.put_script(name, text)
            await ms.set_active(name)
            assert await ms.list_scripts() == [(name, True)]
            assert await ms.get_script(name) == text
            with pytest.raises(SieveNo) as err:
                await ms.check_script('fileinot "x";')
            assert "unknown command" in err.value.text
            with pytest.raises(SieveNo):
                await ms.delete_script(name)  # the active one: the server refuses
            await ms.set_active("")
            await ms.delete_script(name)
            assert await ms.list_scripts() == []

    run(go())


def test_client_refuses_an_untrusted_certificate_and_a_wrong_password(imap_user: ImapUser) -> None:
    server = imap_user.server
    assert server.tls is not None
    with pytest.raises(ServerRulesUnavailable, match="not trusted"):
        run(_scripts(settings(imap_user, ca_file=str(server.tls.wrong_ca_file))))
    with pytest.raises(ServerRulesUnavailable, match="login refused") as err:
        run(_scripts(settings(imap_user, password="wrong")))
    assert "wrong" not in str(err.value)
    # plain text only where the config allows it (loopback)
    assert run(_scripts(settings(imap_user, tls="none"))) == {}


def test_every_call_has_a_timeout() -> None:
    # a server that accepts connections (the kernel's backlog) and never says a word
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        s = SieveSettings(host="127.0.0.1", port=port, username="x", password="y", connect_timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(ServerRulesUnavailable, match=r"no answer within 0\.5 s"):
            run(ManageSieve(s).connect())
        assert time.monotonic() - t0 < 3


# -- the backend -------------------------------------------------------------------------------


def test_apply_writes_its_own_script_and_include_and_never_the_users_rules(imap_user: ImapUser) -> None:
    put(imap_user, "roundcube", USER_SCRIPT, active=True)
    put(imap_user, "old", "discard;\n")
    old_before = scripts(imap_user)["old"]

    assert apply(imap_user, [CONTOSO]) == [("create", "mailfiler: Tracked/Contoso"), ("include", "roundcube")]
    state = scripts(imap_user)
    active_text = state["roundcube"][1]
    assert state["roundcube"][0] and not state["mailfiler"][0]
    # the user's script: every byte kept, two lines added after its require
    first = USER_SCRIPT.index("\n") + 1
    assert (
        active_text
        == USER_SCRIPT[:first] + 'require "include";\ninclude :personal :optional "mailfiler";\n' + USER_SCRIPT[first:]
    )
    assert is_ours(state["mailfiler"][1])

    # in step: nothing to do, nothing written; then a second route, a changed one, one
    # removed: only mailfiler's script changes, the user's scripts stay as they are
    fabrikam = Route("Tracked/Fabrikam", from_domains=("fabrikam.com",), subject_contains=("order",))
    changed = Route("Tracked/Contoso", from_domains=("contoso.com", "contoso.se"))
    for routes, expected in [
        ([CONTOSO], []),
        ([CONTOSO, fabrikam], [("create", "mailfiler: Tracked/Fabrikam")]),
        ([changed, fabrikam], [("update", "mailfiler: Tracked/Contoso")]),
        ([fabrikam], [("delete", "mailfiler: Tracked/Contoso")]),
    ]:
        assert apply(imap_user, routes) == expected
        state = scripts(imap_user)
        assert (state["roundcube"], state["old"]) == ((True, active_text), old_before)

    backend = SieveBackend(settings(imap_user))
    snap = run(backend.read())
    names = [(r.name, r.owned) for r in snap.rules]
    # in the order the server runs them: the include first, then the user's
    assert names == [
        ("roundcube #1", False),
        ("mailfiler: Tracked/Fabrikam", True),
        ("Lists", False),
        ("Boss forward", False),
    ]
    assert {s["name"]: s["state"] for s in snap.scripts} == {
        "mailfiler": "included",
        "old": "inactive",
        "roundcube": "active",
    }
    assert snap.problems == []

    # no routes left: mailfiler's script goes; the include (optional) stays harmless
    assert apply(imap_user, []) == [("delete", "mailfiler: Tracked/Fabrikam"), ("delete", "mailfiler")]
    state = scripts(imap_user)
    assert "mailfiler" not in state and state["roundcube"] == (True, active_text) and state["old"] == old_before
    assert apply(imap_user, []) == []


def test_a_mailbox_without_an_active_script_gets_one_that_includes_mailfilers(imap_user: ImapUser) -> None:
    put(imap_user, "main", "keep;\n")  # inactive, and the name is taken
    assert apply(imap_user, [CONTOSO]) == [("create", "mailfiler: Tracked/Contoso"), ("activate", "main-2")]
    state = scripts(imap_user)
    assert state["main-2"][0] and 'include :personal :optional "mailfiler";' in state["main-2"][1]
    assert state["main"] == (False, "keep;\n")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("script", "text", "active", "match"),
    [
        # mailfiler's own script, edited by hand into something the server cannot run
        ("mailfiler", "# mailfiler: rules written by mailfiler from the route: of its tracked folders.\nif {", False,
         "is broken"),
        # the same name taken by a script mailfiler did not write
        ("mailfiler", 'require "fileinto";\nfileinto "Mine";\n', False, "was not written by mailfiler"),
        # the active script is broken (valid grammar, but the server refuses it)
        ("roundcube", 'require "fileinto";\nfileinot "Lists";\n', True, "active script roundcube is broken"),
        # a syntax error in the active script
        ("roundcube", 'if header :contains "subject" "x" {\n  discard;\n', True, "is broken"),
    ],
)  # fmt: skip
def test_a_broken_script_is_reported_not_overwritten(
    imap_user: ImapUser, script: str, text: str, active: bool, match: str
) -> None:
    require_sieve(imap_user.server)
    if not active:
        put(imap_user, "roundcube", USER_SCRIPT, active=True)
    imap_user.write_sieve_file(script, text, active=active)
    files = {p.name: _digest(p) for p in imap_user.sieve_dir.glob("*.sieve")}
    with pytest.raises(ServerRulesBroken, match=match):
        apply(imap_user, [CONTOSO])
    assert {p.name: _digest(p) for p in imap_user.sieve_dir.glob("*.sieve")} == files
    # and reading lists the problem instead of failing
    snap = run(SieveBackend(settings(imap_user)).read())
    if "not written" not in match:
        assert any(f"script {script} is broken" in p for p in snap.problems), snap.problems


def test_a_foreign_rule_in_mailfilers_script_is_not_overwritten(imap_user: ImapUser) -> None:
    put(imap_user, "roundcube", USER_SCRIPT, active=True)
    apply(imap_user, [CONTOSO])
    text = scripts(imap_user)["mailfiler"][1] + "\n# rule:[my own]\nif true { keep; }\n"
    put(imap_user, "mailfiler", text)
    with pytest.raises(ServerRulesBroken, match="holds rules mailfiler did not write"):
        apply(imap_user, [])
    assert scripts(imap_user)["mailfiler"][1] == text


def test_rules_written_by_mailfiler_file_mail_delivered_over_lmtp(imap_user: ImapUser) -> None:
    put(imap_user, "roundcube", USER_SCRIPT, active=True)
    with imap_user.client() as admin:
        for folder in ("Tracked/Contoso", "Lists"):
            admin.create(folder)
    apply(imap_user, [Route("Tracked/Contoso", from_domains=("contoso.com",))])
    imap_user.deliver(b"From: bob@sales.contoso.com\r\nSubject: quote\r\nMessage-ID: <1@x>\r\n\r\nhi\r\n")
    imap_user.deliver(b"From: l@lists.example\r\nList-Id: <x.lists.example>\r\nMessage-ID: <2@x>\r\n\r\nhi\r\n")
    imap_user.deliver(b"From: carol@adatum.com\r\nSubject: lunch\r\nMessage-ID: <3@x>\r\n\r\nhi\r\n")
    with imap_user.client() as admin:
        assert len(admin.uids("Tracked/Contoso")) == 1  # mailfiler's rule
        assert len(admin.uids("Lists")) == 1  # the user's rule still runs
        assert len(admin.uids("INBOX")) == 1


@pytest.fixture(scope="module")
def no_include_server() -> Iterator[DovecotServer]:
    yield from start_dovecot(sieve_extra="sieve_extensions = -include")


def test_a_server_without_include_gets_a_clear_error_and_nothing_written(no_include_server: DovecotServer) -> None:
    require_sieve(no_include_server)
    user = no_include_server.add_user()
    put(user, "roundcube", USER_SCRIPT, active=True)
    with pytest.raises(ServerRulesUnsupported, match="no include"):
        apply(user, [CONTOSO])
    assert set(scripts(user)) == {"roundcube"}


def test_a_broken_active_script_that_includes_mailfilers_already_is_left_alone_and_ours_kept_in_step(
    imap_user: ImapUser,
) -> None:
    put(imap_user, "roundcube", USER_SCRIPT, active=True)
    apply(imap_user, [CONTOSO])
    broken = scripts(imap_user)["roundcube"][1] + 'fileinot "x";\n'
    imap_user.write_sieve_file("roundcube", broken, active=True)
    fabrikam = Route("Tracked/Fabrikam", from_domains=("fabrikam.com",))
    assert apply(imap_user, [CONTOSO, fabrikam]) == [("create", "mailfiler: Tracked/Fabrikam")]
    assert (imap_user.sieve_dir / "roundcube.sieve").read_text() == broken
