"""A backend is one module plus one registry line (issue 21): no code outside
the backends' own modules and the registry branches on a backend's name or
imports a backend's implementation.  A test over the source, so CI keeps it so."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mailfiler.backends import BACKENDS, registry

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "mailfiler"
#: kinds registered now and the ones announced (a branch on them is as bad)
KINDS = set(BACKENDS) | {"ews", "graph", "exchange"}
#: the backends' own modules: the registry package and their Source implementations
OWN = re.compile(r"^(backends/.*|sources/(maildir|imap[a-z]*)\.py)$")
BACKEND_MODULES = re.compile(
    "^(" + "|".join(re.escape(m) for m in BACKENDS.values()) + r"|mailfiler\.sources\.(maildir|imap[a-z]*))$"
)


def _outside() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not OWN.match(rel):
            out.append((rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)))
    return out


def _names_a_kind(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and node.value in KINDS:
        return True
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_a_kind(e) for e in node.elts)
    return False


def _branches(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            # backend == "imap", "imap" != kind, kind in ("maildir", "imap")
            operands = [node.left, *node.comparators]
            if any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops) and any(
                _names_a_kind(o) for o in operands
            ):
                found.append(f"line {node.lineno}: compares with a backend name")
        if isinstance(node, ast.Attribute) and node.attr in KINDS:
            # mb.imap, config.maildir: reading one backend's config by name
            found.append(f"line {node.lineno}: .{node.attr}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and any(_names_a_kind(a) for a in node.args[1:2])
        ):
            found.append(f"line {node.lineno}: {node.func.id}(..., backend name)")
        if isinstance(node, ast.MatchValue) and _names_a_kind(node.value):
            found.append(f"line {node.lineno}: case on a backend name")
    return found


def _imports(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found += [f"line {node.lineno}: imports {n}" for n in names if BACKEND_MODULES.match(n)]
    return found


def test_no_backend_branch_outside_the_backends() -> None:
    offenders = [f"{rel} {hit}" for rel, tree in _outside() for hit in _branches(tree)]
    assert offenders == [], "branch on the registry (mailfiler.backends) instead:\n" + "\n".join(offenders)


def test_no_backend_import_outside_the_backends() -> None:
    offenders = [f"{rel} {hit}" for rel, tree in _outside() for hit in _imports(tree)]
    assert offenders == [], "reach a backend through mailfiler.backends.registry():\n" + "\n".join(offenders)


def test_the_check_sees_a_branch() -> None:
    bad = ast.parse(
        'if mb.backend == "imap":\n    pass\nx = mb.maildir\ny = getattr(mb, "imap", None)\nimport mailfiler.sources.imap\n'
    )
    assert len(_branches(bad)) == 3
    assert len(_imports(bad)) == 1


def test_every_registered_backend_names_its_kind() -> None:
    assert set(registry()) == set(BACKENDS)
    for kind, backend in registry().items():
        assert backend.kind == kind
