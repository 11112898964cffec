"""A daemon's config for a mailbox in the Graph fake (app-only, a client secret in a 0600 file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.graph.helpers import APP_ID, SECRET, UPN
from tests.servers.graph import GraphFake


def graph_block(
    graph: GraphFake, root: Path, *, poll: tuple[float, float] = (0.1, 0.4), **extra: Any
) -> dict[str, Any]:
    assert graph.tls is not None
    secret = root / "graph.secret"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    secret.chmod(0o600)
    return {
        "tenant": graph.tenant.id,
        "client_id": APP_ID,
        "authority": graph.url,
        "graph_url": f"{graph.url}/v1.0",
        "user": UPN,
        "password_file": str(secret),
        "ca_file": str(graph.tls.ca_file),
        "timeout": 15,
        "poll": {"min": poll[0], "max": poll[1]},
        **extra,
    }
