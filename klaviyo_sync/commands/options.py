"""The options every command takes, declared once, and ``common``, which adds them to a
command as one ``Settings`` argument."""

import functools
import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..client import DEFAULT_BASE_URL, DEFAULT_DEADLINE, DEFAULT_REVISION
from ..errors import UsageError
from ..logsetup import setup_logging
from .settings import _STATE, Settings

# -- options every command takes, declared once -------------------------------------------------
DbOpt = Annotated[Path, typer.Option("--db", envvar="KLAVIYO_SYNC_DB", help="SQLite database file.",
                                     show_envvar=True)]
KeyOpt = Annotated[Optional[str], typer.Option("--api-key", envvar="KLAVIYO_API_KEY", show_default=False,
                                               help="Klaviyo private API key (prefer the environment variable).",
                                               show_envvar=True)]
BaseUrlOpt = Annotated[str, typer.Option("--base-url", envvar="KLAVIYO_BASE_URL", help="API base URL.",
                                         show_envvar=True)]
RevisionOpt = Annotated[str, typer.Option("--revision", envvar="KLAVIYO_REVISION",
                                          help="API revision header.", show_envvar=True)]
RateLimitOpt = Annotated[Optional[str], typer.Option(
    "--rate-limit", envvar="KLAVIYO_RATE_LIMITS", metavar="ENDPOINT=S/M,...", show_envvar=True,
    help="Lower this client's request budget, e.g. events=100/1000 (per second/per minute); "
         "default: Klaviyo's published limits less 10%.")]
DeadlineOpt = Annotated[float, typer.Option(
    "--request-deadline", envvar="KLAVIYO_REQUEST_DEADLINE", metavar="SECONDS", show_envvar=True,
    min=1, max=3600, help="Give up on one request (connect to last byte) after SECONDS, then retry it.")]
AllowHttpOpt = Annotated[bool, typer.Option(
    "--allow-http", envvar="KLAVIYO_ALLOW_HTTP", show_envvar=True,
    help="Allow a plain http:// base URL to a host other than this machine (the key then crosses the network unencrypted).")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing on success.")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Log requests and retries; tracebacks on errors.")]
SummaryFormatOpt = Annotated[str, typer.Option(
    "--format", metavar="FORMAT",
    help="The end-of-run summary: auto (text on a terminal, a JSON line when piped), json or text.")]
ConversionOpt = Annotated[Optional[str], typer.Option(
    "--conversion-metric", metavar="NAME_OR_ID", help="Metric for conversions (default: Placed Order).")]
RowsFormatOpt = Annotated[str, typer.Option(
    "--format", metavar="FORMAT",
    help="auto (a table on a terminal, JSON when piped), json, jsonl, csv or table.")]
WaitOpt = Annotated[float, typer.Option("--wait", min=0, metavar="SECONDS",
                                        help="Wait up to SECONDS for another sync to finish instead of exiting.")]
ChartFormatOpt = Annotated[str, typer.Option(
    "--format", metavar="FORMAT",
    help="auto (a table on a terminal, JSON when piped), json, jsonl, csv, table, "
         "or chart (bars, for answers over time).")]

_COMMON = [
    ("db", DbOpt, Path("klaviyo.db")),
    ("api_key", KeyOpt, None),
    ("base_url", BaseUrlOpt, DEFAULT_BASE_URL),
    ("revision", RevisionOpt, DEFAULT_REVISION),
    ("quiet", QuietOpt, False),
    ("verbose", VerboseOpt, False),
    ("rate_limit", RateLimitOpt, None),
    ("request_deadline", DeadlineOpt, DEFAULT_DEADLINE),
    ("allow_http", AllowHttpOpt, False),
]


def common(fn):
    """Add the shared options to a command; it receives them as one ``Settings`` argument."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "settings"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
               for name, ann, default in _COMMON]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        _check_text(kwargs)
        shared = {name: kwargs.pop(name) for name, _, _ in _COMMON}
        settings = Settings(**shared)
        _STATE["verbose"] = settings.verbose
        # As given: redact() removes it and its stripped and escaped forms from every message.
        _STATE["api_key"] = settings.api_key
        if settings.api_key is not None:
            settings.api_key = settings.api_key.strip() or None
        setup_logging(settings.verbose, [_STATE["api_key"]])
        _check_db_path(settings.db)
        return fn(settings, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)
    wrapper.__annotations__ = {**{p.name: p.annotation for p in params}}
    return wrapper


def _check_text(kwargs: dict) -> None:
    """Every text option must be valid UTF-8 (a non-UTF-8 byte arrives as a lone surrogate and
    would fail later, as exit 1): exit 2 naming the option, without echoing the value."""
    for name, value in kwargs.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, (str, Path)):
                try:
                    str(v).encode("utf-8")
                except UnicodeEncodeError:
                    option = "--" + name.rstrip("_").replace("_", "-")
                    raise UsageError(f"{option}: not valid UTF-8") from None


def _check_db_path(db: Path) -> None:
    """--db must name a regular file (or one to create): "" and /dev/null are refused (exit 2)
    before anything (a lock file, a WAL) is created beside them."""
    if str(db) in ("", ".") or (db.exists() and not db.is_file()):
        raise UsageError(f"--db {str(db)!r}: not a database file path (a regular file, e.g. klaviyo.db)")


def _parse(parser, value, option: str):
    try:
        return parser(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None

