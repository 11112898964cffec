"""Output helpers: JSON for scripts, rich tables for people.

Tables fit the terminal: long text is cut with an ellipsis (or wraps at word
boundaries), and when even that does not fit, the columns a caller marked as
droppable go first, named in a note under the table.  ``--wide`` shows every
column at full length; ``--json`` is always complete.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import click

from mailfiler.util.text import plural  # noqa: F401 - the CLI's callers take it from here

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")
wide_option = click.option(
    "--wide", is_flag=True, help="Show every column at full length (the table may be wider than the terminal)."
)

#: the width a table gets when stdout is not a terminal (a pipe, a file)
PIPE_WIDTH = 200
#: a text column is not squeezed below this (or its header) before columns are dropped
MIN_TEXT = 12
#: each column costs its padding and one rule character; the table one more rule
COLUMN_OVERHEAD = 3


@dataclass(frozen=True)
class Col:
    """A table column.

    ``drop``: 0 = always shown; otherwise dropped when the terminal is too
    narrow, the highest number first.  ``short``: a number or a one-word
    state, never squeezed or cut.  ``overflow``: how text longer than the
    column is cut (``ellipsis``) or wrapped (``fold`` keeps every character)."""

    header: str
    drop: int = 0
    short: bool = False
    overflow: Literal["ellipsis", "fold"] = "ellipsis"


def when(iso: str | None, never: str = "never") -> str:
    """A stored UTC time for a table cell: ``2026-12-06 20:30:21`` (to the second)."""
    return iso[:19].replace("T", " ") if iso else never


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def terminal_width() -> int:
    if not sys.stdout.isatty():
        return PIPE_WIDTH
    return shutil.get_terminal_size((80, 24)).columns


def _min_width(col: Col, values: list[str]) -> int:
    natural = max([len(col.header), *(len(v) for v in values)])
    if col.short:
        return natural
    return min(natural, max(MIN_TEXT, len(col.header)))


def fit_columns(cols: Sequence[Col], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Indexes of the columns that fit in ``width`` characters, in order."""
    keep = list(range(len(cols)))
    need = {i: _min_width(cols[i], [r[i] for r in rows]) for i in keep}

    def total() -> int:
        return sum(need[i] for i in keep) + COLUMN_OVERHEAD * len(keep) + 1

    while total() > width:
        droppable = [i for i in keep if cols[i].drop > 0]
        if droppable:
            # the highest drop number first; of equals, the rightmost
            keep.remove(max(droppable, key=lambda i: (cols[i].drop, i)))
        elif len(keep) > 1:
            # a table without priorities, or still too wide: the rightmost columns go (the
            # note names them) rather than rich cropping every line at the terminal's edge
            keep.pop()
        else:
            break
    return keep


def table(
    title: str | None, columns: Sequence[str | Col], rows: Sequence[Sequence[Any]], *, wide: bool | None = None
) -> None:
    """``wide``: the command's --wide (None: it has none, and the note points to --json)."""
    # rich only where a table is printed: every command imports this module (~0.1 s of CPU)
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    width = terminal_width()
    keep = list(range(len(cols))) if wide else fit_columns(cols, cells, width)
    t = Table(title=title, show_lines=False, header_style="bold")
    for i in keep:
        col = cols[i]
        if wide or col.short:
            t.add_column(col.header, no_wrap=True)
        else:
            t.add_column(col.header, overflow=col.overflow, min_width=min(MIN_TEXT, len(col.header)) or None)
    for row in cells:
        # Text, not str: a subject like "[urgent] ..." is not rich markup
        t.add_row(*(Text(row[i]) for i in keep))
    # --wide: as wide as the table needs; the terminal wraps what it must
    console = Console(width=100_000 if wide else width, soft_wrap=False)
    console.print(t)
    hidden = [cols[i].header for i in range(len(cols)) if i not in keep]
    if hidden:
        how = "--json" if wide is None else "--wide"
        console.print(f"[dim]hidden at {width} columns: {', '.join(hidden)} ({how} shows all)[/dim]")
