"""Run the Graph fake on its own: ``python -m tests.servers.graph --port 8443 --users users.json``.

The users file (JSON)::

    {"tenant_domain": "contoso.onmicrosoft.com",
     "apps": [{"client_id": "11111111-2222-3333-4444-555555555555", "secret": "s3cret",
               "certificate": "app-cert.pem", "public": true, "allowed_users": ["adele@contoso.onmicrosoft.com"]}],
     "users": [{"upn": "adele@contoso.onmicrosoft.com", "displayName": "Adele",
                "folders": ["Inbox/Clients/Acme"], "messages": {"Inbox/Clients/Acme": 3}}]}

It prints the authority, the test CA to trust and the apps; then serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tests.servers.graph.model import mime_message
from tests.servers.graph.server import GraphFake
from tests.servers.httpfake import run_standalone
from tests.servers.tls import make_tls


def load(graph: GraphFake, spec: dict) -> None:  # type: ignore[type-arg]
    for app in spec.get("apps", []):
        cert = Path(app["certificate"]).read_bytes() if app.get("certificate") else None
        allowed = set(app["allowed_users"]) if app.get("allowed_users") is not None else None
        graph.identity.register_app(app.get("client_id"), secret=app.get("secret"), certificate_pem=cert,
                                    public=bool(app.get("public")), allowed_users=allowed)  # fmt: skip
    for user in spec.get("users", []):
        graph.add_user(user["upn"], user.get("displayName", ""), user.get("folders", []))
        for path, count in user.get("messages", {}).items():
            graph.make_folder(user["upn"], path)
            for i in range(int(count)):
                graph.deliver(user["upn"], path, mime_message(f"Message {i + 1} in {path}", to=user["upn"]))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.graph", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--users", type=Path, help="JSON file with apps and users (see the module docstring)")
    parser.add_argument("--tls-dir", type=Path, help="where to write the test CA and certificate (default: a temp dir)")
    parser.add_argument("--token-lifetime", type=float, default=3600.0, help="access token lifetime in seconds")
    args = parser.parse_args()
    tls_dir = args.tls_dir or Path(tempfile.mkdtemp(prefix="graphfake-"))
    tls_dir.mkdir(parents=True, exist_ok=True)
    spec = json.loads(args.users.read_text()) if args.users else {}
    graph = GraphFake(
        make_tls(tls_dir), port=args.port, tenant_domain=spec.get("tenant_domain", "contoso.onmicrosoft.com")
    )
    graph.identity.lifetime = args.token_lifetime
    if not spec.get("apps"):
        spec["apps"] = [{"secret": "secret", "public": True}]
    load(graph, spec)
    print(f"authority: {graph.authority}  (msal: instance_discovery=False, or {graph.url}/common/discovery/instance)")
    print(f"graph:     {graph.url}/v1.0")
    print(f"trust:     {graph.tls.ca_file if graph.tls else '-'}")
    for app in graph.identity.apps.values():
        print(
            f"app:       client_id={app.client_id} secret={app.secret!r} certificate={app.certificate_pem is not None} public={app.public}"
        )
    for mailbox in graph.tenant.mailboxes.values():
        print(f"user:      {mailbox.upn} id={mailbox.id}")
    run_standalone(graph.server, "Microsoft Graph fake")


if __name__ == "__main__":
    main()
