"""The options every command takes, declared once, and ``common``, which adds them to a
command as one ``Settings`` argument."""

import functools
import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..client import DEFAULT_BASE_URL, DEFAULT_REVISION
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
]


def common(fn):
    """Add the shared options to a command; it receives them as one ``Settings`` argument."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "settings"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
               for name, ann, default in _COMMON]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        shared = {name: kwargs.pop(name) for name, _, _ in _COMMON}
        settings = Settings(**shared)
        _STATE["verbose"] = settings.verbose
        _STATE["api_key"] = settings.api_key
        setup_logging(settings.verbose, [settings.api_key])
        return fn(settings, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params)
    wrapper.__annotations__ = {**{p.name: p.annotation for p in params}}
    return wrapper


def _parse(parser, value, option: str):
    try:
        return parser(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None

