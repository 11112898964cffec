"""The mailbox the benchmarks run against: four tracked folders (three with
a regarding, one without) and a few records, in a fresh SQLite store; and
the facts about the run that every bench's JSON starts with."""

from __future__ import annotations

import compileall
import os
import sys
import time
from pathlib import Path
from typing import Any

#: (folder, regarding) tracked by the benchmark mailbox
FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("Tracked/Contoso", "account:contoso"),
    ("Tracked/Fabrikam", "account:fabrikam"),
    ("Cases/CAS-01001", "case:CAS-01001"),
    ("Tracked/Unfiled", None),
)

_TEMPLATE = """\
# written by {writer}
database: sqlite:///store.db
state_dir: state
records:
  - {{entity: account, key: contoso, name: Contoso Ltd, domains: [contoso.com]}}
  - {{entity: account, key: fabrikam, name: Fabrikam Inc, domains: [fabrikam.com]}}
  - {{entity: contact, key: bob.smith, name: Bob Smith, emails: [bob@contoso.com], parent: "account:contoso"}}
  - {{entity: case, key: CAS-01001, name: Contoso invoice dispute, parent: "account:contoso"}}
mailboxes:
  - name: alice
    owner: alice@example.com
    maildir: "{maildir}"
    layout: maildir++
    create_missing_folders: false
    tracked_folders:
{folders}
"""


def write_config(base: Path, maildir: Path | str, folders: list[str], *, writer: str) -> Path:
    """Write ``base/mailfiler.yaml`` tracking ``folders`` (names from FOLDERS)."""
    regarding = dict(FOLDERS)
    lines = []
    for folder in folders:
        lines.append(f"      - folder: {folder}")
        if regarding[folder]:
            lines.append(f'        regarding: "{regarding[folder]}"')
    cfg = base / "mailfiler.yaml"
    text = _TEMPLATE.format(writer=writer, maildir=maildir, folders="\n".join(lines))
    cfg.write_text(text, encoding="utf-8")
    return cfg


def compile_bytecode(*trees: Path) -> None:
    """Compile mailfiler's modules to bytecode, as an installed package has them.

    The dev venv installs mailfiler in editable mode, and these machines set
    PYTHONDONTWRITEBYTECODE=1: every ``mailfiler`` process (and parse helper) would
    compile its ~80 modules from source at each start (~0.1 s), which no installed
    mailfiler does (pip and Debian packages ship the bytecode).  ``trees``: other
    trees' ``daemon/`` run beside this one (``--base``), compiled alike so that the
    comparison is fair."""
    import mailfiler

    compileall.compile_dir(Path(mailfiler.__file__).parent, quiet=1)
    for tree in trees:
        compileall.compile_dir(Path(tree) / "mailfiler", quiet=1)


def run_info(bench: str, load_before: tuple[float, float, float]) -> dict[str, Any]:
    """Which bench ran, when, and on what (figures are only comparable on an idle machine)."""
    return {
        "bench": bench,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host_cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "python": sys.version.split()[0],
    }
