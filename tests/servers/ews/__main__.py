"""Run the fake Exchange on its own: ``python -m tests.servers.ews --port P --users FILE``.

FILE (YAML or JSON): ``{version: "2016" | "2019", domain: EXAMPLE, users: [{smtp, username,
password, impersonate: [...], delegates: [...], folders: [...]}]}``.  With ``--tls DIR`` it
serves HTTPS with a test CA written to DIR (ca.crt is the CA to trust)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from tests.servers.ews.server import EwsServer
from tests.servers.ews.soap import BUILDS
from tests.servers.httpfake import run_standalone
from tests.servers.tls import make_tls


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.ews", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--users", type=Path, required=True, help="YAML or JSON file with users and folders")
    parser.add_argument("--tls", type=Path, help="directory for the test CA and certificate (serves HTTPS)")
    parser.add_argument("--stream-lifetime", type=float, help="seconds before a stream gets ConnectionStatus=Closed")
    args = parser.parse_args()
    text = args.users.read_text(encoding="utf-8")
    config = json.loads(text) if args.users.suffix == ".json" else yaml.safe_load(text)
    tls = None
    if args.tls is not None:
        args.tls.mkdir(parents=True, exist_ok=True)
        tls = make_tls(args.tls)
    server = EwsServer(
        config.get("users", []),
        tls=tls,
        port=args.port,
        build=BUILDS[str(config.get("version", "2016"))],
        domain=config.get("domain", "EXAMPLE"),
    )
    if args.stream_lifetime:
        server.stream_lifetime = args.stream_lifetime
    what = f"fake Exchange (EWS at {server.ews_url}" + (f", CA {tls.ca_file}" if tls else "") + ")"
    run_standalone(server, what)


if __name__ == "__main__":
    main()
