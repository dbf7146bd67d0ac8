"""export: the database as CSV / JSONL / Parquet files or one DuckDB file (see klaviyo_sync.export)."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import output
from ..export import FORMATS, export
from .base import Settings, app, common


@app.command("export")
@common
def export_cmd(
    settings: Settings,
    to: Annotated[Path, typer.Option("--to", help="Directory (csv, jsonl, parquet) or file (duckdb) to write.")],
    fmt: Annotated[str, typer.Option("--format", help=f"{', '.join(FORMATS)} (parquet and duckdb need the export extra).")] = "parquet",
    tables: Annotated[Optional[str], typer.Option("--tables", help="Comma-separated tables and views (default: all but event_details).")] = None,
    schema: Annotated[str, typer.Option("--schema", help="native (our tables) or fivetran (the tables dbt_klaviyo reads; --format duckdb).")] = "native",
    report_fmt: Annotated[str, typer.Option("--report", help="How to print what was written: auto, table or json.")] = "auto",
) -> None:
    """Write every table and analytic view to files or a DuckDB database; a second export rewrites
    only the tables and event days that changed."""
    from ..errors import UsageError

    if report_fmt not in ("auto", "table", "json"):
        raise UsageError(f"--report: {report_fmt!r} is not one of auto, table, json")
    wanted = [t.strip() for t in tables.split(",") if t.strip()] if tables else None

    def progress(name: str, part: str) -> None:
        if settings.verbose:
            print(f"wrote {name}{' ' + part if part else ''}", file=sys.stderr)

    report = export(settings.db, to, fmt, schema=schema, tables=wanted, progress=progress)
    if settings.quiet:
        return
    rows = [{"table": name, "rows": report.rows[name], "written": report.written[name],
             "unchanged": report.unchanged[name], "removed": report.removed[name]}
            for name in report.rows]
    if output.resolve_format(report_fmt) == "json":
        output.write_json({"to": str(to), "format": fmt, "schema": schema, "seconds": report.seconds,
                           "tables": rows})
    else:
        output.write_table(rows, [("table", "Table", "text"), ("rows", "Rows", "int"),
                                  ("written", "Parts written", "int"), ("unchanged", "Unchanged", "int"),
                                  ("removed", "Removed", "int")],
                           f"Exported to {to} ({fmt}, {schema}) in {report.seconds:.1f} s")
