"""Rows out: a rich table on a terminal, JSON / JSONL / CSV for scripts. Data goes to stdout."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import IO

from rich.console import Console
from rich.table import Table

FORMATS = ("auto", "json", "jsonl", "csv", "table")


def resolve_format(fmt: str, stream: IO | None = None) -> str:
    stream = stream or sys.stdout
    if fmt == "auto":
        return "table" if stream.isatty() else "json"
    return fmt


def write_json(data, stream: IO | None = None) -> None:
    stream = stream or sys.stdout
    json.dump(data, stream, indent=2, ensure_ascii=False)
    stream.write("\n")


def write_json_line(data, stream: IO | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n")
    stream.flush()


def write_rows(rows: Sequence[dict], fmt: str, columns: Sequence[tuple[str, str, str]],
               title: str | None = None, stream: IO | None = None) -> None:
    """``columns`` are (key, heading, kind) with kind one of text, int, rate, money, seconds, bool."""
    stream = stream or sys.stdout
    if fmt == "json":
        write_json(list(rows), stream)
    elif fmt == "jsonl":
        for row in rows:
            stream.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(stream, fieldnames=list(rows[0].keys()) if rows else [c[0] for c in columns],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in row.items()}
                         for row in rows)
    else:
        write_table(rows, columns, title, stream)


def cell(value, kind: str) -> str:
    if value is None or value == "":
        return ""
    if kind == "rate":
        return f"{value * 100:.1f}%"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "seconds":
        return f"{value:,.2f}"
    if kind == "bool":
        return "yes" if value else ""
    return str(value)


def write_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]], title: str | None,
                stream: IO | None = None) -> None:
    stream = stream or sys.stdout
    console = Console(file=stream, width=None if stream.isatty() else 200, highlight=False)
    table = Table(title=title, title_justify="left")
    for _, heading, kind in columns:
        table.add_column(heading, justify="right" if kind in ("int", "rate", "money", "seconds") else "left",
                         overflow="fold")
    for row in rows:
        table.add_row(*[cell(row.get(key), kind) for key, _, kind in columns])
    console.print(table)
