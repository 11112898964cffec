"""The daemon with ``imap: {keywords: true}``: tracked mail gets ``$Tracked`` on the
server, mail over the size limit is shunted and gets ``$TrackFailed``, nothing is ever
marked ``\\Seen``; and a restart catches up from the stored cursor tokens."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.e2e.harness import E2EEnv, wait_for
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.e2e.test_imap_daemon import KUNDER, imap_world
from tests.servers.dovecot import ImapUser

pytestmark = pytest.mark.dovecot


def flags(user: ImapUser, folder: str) -> dict[int, set[str]]:
    with user.client() as admin:
        admin.select(folder, readonly=True)
        _, data = admin.imap.uid("FETCH", "1:*", "(UID FLAGS)")
    out: dict[int, set[str]] = {}
    for item in data:
        if isinstance(item, bytes):
            text = item.decode()
            uid = int(text.split("UID ", 1)[1].split()[0].rstrip(")"))
            out[uid] = set(text.split("FLAGS (", 1)[1].split(")", 1)[0].split()) - {"\\Recent"}
    return out


def test_keywords_show_tracking_in_the_mailbox(imap_user: ImapUser, env: E2EEnv) -> None:
    imap_world(env, imap_user)
    config = yaml.safe_load(env.config_path.read_text(encoding="utf-8"))
    config["mailboxes"][0]["imap"]["keywords"] = True
    config["limits"] = {"max_message_bytes": 20_000}  # the big message is over it
    env.write_config(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    with imap_user.client() as admin:
        admin.create(KUNDER)
        admin.create("Tracked/Contoso")
    daemon = env.start_daemon()
    daemon.wait_event("watching")

    with imap_user.client() as admin:
        small = admin.append(KUNDER, mail(1, frm="<sven@akesson.se>", subject="Offert"))
        big = admin.append(KUNDER, mail(2, frm="<sven@akesson.se>", subject="Bilaga") + b"x" * 30_000)
    env.wait_activity(mid(1), lambda a: a["regarding"] == "account:akesson")
    wait_for(lambda: flags(imap_user, KUNDER).get(small) == {"$Tracked"}, what="$Tracked on the tracked message")
    wait_for(lambda: flags(imap_user, KUNDER).get(big) == {"$TrackFailed"}, what="$TrackFailed on the shunted one")
    shunted = json.loads(env.cli("shunt", "list", "--json").stdout)
    assert [s["reason"] for s in shunted] == ["too-large"]

    # a restart: the folders are caught up from their tokens, and new mail is marked too
    daemon.terminate()
    with imap_user.client() as admin:
        late = admin.append(KUNDER, mail(3, frm="<sven@akesson.se>", subject="Medan du var borta"))
    daemon = env.start_daemon()
    env.wait_activity(mid(3))
    wait_for(lambda: flags(imap_user, KUNDER).get(late) == {"$Tracked"}, what="$Tracked after the restart")
    assert len(env.activities()) == 2
    assert all("\\Seen" not in f for f in flags(imap_user, KUNDER).values())
