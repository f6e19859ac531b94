"""How the CLI prints: JSON, aligned tables, sizes, and a progress bar over edges written."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["echo_json", "echo_table", "write_csv", "human_bytes", "ProgressBar"]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("(no rows)")
        return
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    click.echo("  ".join(col.ljust(w) for col, w in zip(columns, widths)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Rows as a CSV file, one column per key (in first-seen order); lists and dicts as JSON."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else json.dumps(row[c], default=str)
                             if isinstance(row.get(c), (list, dict)) else row[c] for c in columns])


def _cell(value: Any, limit: int = 60) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class ProgressBar:
    """A tqdm progress bar over edges written (the library's Progress callbacks)."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None

    def start(self, total_edges: int) -> None:
        self.bar = self._tqdm(total=total_edges, unit="edge", unit_scale=True, file=sys.stderr,
                              dynamic_ncols=True, disable=None)

    def part(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_description(name[:40])

    def edges(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
