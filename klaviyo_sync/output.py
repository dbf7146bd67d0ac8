"""Rows out: a rich table on a terminal, JSON / JSONL / CSV for scripts, bars for answers over
time (``--format chart``). Data goes to stdout."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

FORMATS = ("auto", "json", "jsonl", "csv", "table")
# What a command that can chart its rows accepts: check_format(fmt, output.CHART_FORMATS).
CHART_FORMATS = (*FORMATS, "chart")


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
               title: str | None = None, stream: IO | None = None,
               chart: tuple[str, str] | None = None) -> None:
    """``columns`` are (key, heading, kind) with kind one of text, int, rate, money, seconds, bool.
    ``chart`` = (label key, value key): what ``--format chart`` draws, one bar per row."""
    stream = stream or sys.stdout
    if fmt == "chart":
        if chart is None:
            raise ValueError("--format chart needs chart=(label key, value key)")
        label, value = chart
        _, heading, kind = next(c for c in columns if c[0] == value)
        write_chart(rows, label, value, f"{title}: {heading}" if title else heading, kind, stream)
    elif fmt == "json":
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


SPARKS = "▁▂▃▄▅▆▇█"
_EIGHTHS = ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")


def spark_level(value, top) -> int | None:
    """Which of the eight sparkline characters ``value`` gets: None for nothing (0, missing or
    negative), else 0 (▁) .. 7 (█, ``top``, the largest value): 7 * value / top, rounded half up."""
    if not value or value <= 0 or not top:
        return None
    return min(7, math.floor(7 * value / top + 0.5))


def sparkline(values: Sequence) -> str:
    """One character per value, ▁ to █ scaled to the largest value, ``·`` for nothing."""
    top = max((v for v in values if v is not None), default=0)
    return "".join("·" if (lvl := spark_level(v, top)) is None else SPARKS[lvl] for v in values)


def bar(value, top, width: int) -> str:
    """A horizontal bar ``width * value / top`` characters long, to an eighth of a character."""
    if not value or value <= 0 or not top or top <= 0:
        return ""
    eighths = round(8 * width * value / top)
    return "█" * (eighths // 8) + _EIGHTHS[eighths % 8]


def write_chart(rows: Sequence[dict], label_key: str, value_key: str, title: str | None = None,
                kind: str = "int", stream: IO | None = None) -> None:
    """One line per row: its label, a bar for its value (the largest value fills the width),
    and the value. For answers over time: write_rows(rows, "chart", columns, chart=("day", "revenue"))."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    console = Console(file=stream, width=None if tty else 80, highlight=False)
    labels = [str(r.get(label_key) if r.get(label_key) is not None else "") for r in rows]
    values = [r.get(value_key) for r in rows]
    shown = [cell(v, kind) for v in values]
    top = max((v for v in values if v is not None), default=0)
    label_w = max((len(x) for x in labels), default=0)
    value_w = max((len(x) for x in shown), default=0)
    width = min(80, max(10, console.width - label_w - value_w - 2))
    if title:
        console.print(Text(title, style="italic"))
    for label, value, text in zip(labels, values, shown):
        line = Text(label.ljust(label_w) + " ")
        drawn = bar(value, top, width)
        line.append(drawn, style="cyan")
        line.append(" " * (width - len(drawn) + 1) + text.rjust(value_w))
        console.print(line, no_wrap=True, overflow="ignore", crop=False)
