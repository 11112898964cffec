"""A separate writer process for the SQLite multi-process test.

    python -m tests.store._writer CONFIG_JSON MAILBOX COUNT

Builds the runtime from the config (as a daemon does at start), prints
``ready``, waits for a line on stdin (so that both writers begin together),
tracks ``realistic_message(0..COUNT-1)`` into MAILBOX/INBOX and prints the
outcome events as JSON.
"""

from __future__ import annotations

import json
import sys

from mailfiler.config.schema import Config
from mailfiler.service.runtime import open_store, sync_config
from mailfiler.tracking.parse import parse_message
from tests.mailgen import realistic_message
from tests.store.helpers import Store


def main(argv: list[str]) -> int:
    config = Config.model_validate_json(argv[1])
    mailbox, count = argv[2], int(argv[3])
    db = open_store(config)
    try:
        store = Store("sqlite", config.database, db, config.state_dir)
        rt = sync_config(db, config)[mailbox]
        tracker = store.tracker(config)
        messages = [parse_message(realistic_message(i, with_attachment_every=3)) for i in range(count)]
        print("ready", flush=True)
        sys.stdin.readline()
        events = [
            tracker.track(rt.ctx, rt.folders["INBOX"], f"{mailbox}-{i}", msg).event for i, msg in enumerate(messages)
        ]
    finally:
        db.close()
    json.dump(events, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
