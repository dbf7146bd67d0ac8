"""Running a sync: the one-writer lock, the sync_runs record finished whatever happens, and
the registry of sync-all's steps."""

import sqlite3
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from .. import db as store
from .. import errors
from ..errors import AuthError, KlaviyoSyncError, redact
from ..lock import SyncLock
from ..streams import declarations, scope_for
from ..streams.declare import Declaration
from ..streams.engine import SyncResult
from .report import _summary
from .settings import _STATE, Settings, ensure_account


class Interrupted(KlaviyoSyncError):
    exit_code = errors.INTERRUPTED


class Terminated(Interrupted):
    exit_code = errors.TERMINATED

# -- running a sync ------------------------------------------------------------------------------
@contextmanager
def locked_db(settings: Settings, wait: float):
    """Hold the one-writer lock and an open database for a whole command."""
    store.check_path(settings.db)  # another application's file gets no <db>.lock beside it
    with SyncLock(settings.db).acquire(wait):
        database = store.open_db(settings.db)
        try:
            ensure_account(settings, database, record=False)
            yield database
        finally:
            database.close()


@contextmanager
def run_record(settings: Settings, database, command: str, arguments: dict):
    """A sync_runs row for one sync, finished whatever happens (failed, interrupted, partial)."""
    key = _STATE["api_key"] or settings.api_key
    ended = partial(store.finish_or_keep, database, settings.db, command=command, arguments=arguments)
    try:
        ensure_account(settings, database, record=False)  # another account's key: refused before any write
        run_id = store.start_run(database, command, arguments)
    except (sqlite3.Error, OSError) as exc:  # a full disk, a held write lock: kept in <db>.lastfail
        failure = store.database_failure(exc)
        if failure is None:
            raise
        ended(None, status="failed", summary={}, error=redact(str(failure), key))
        raise failure from None
    run = {"id": run_id, "db": database, "started": time.monotonic(), "result": SyncResult(), "client": None}
    try:
        ensure_account(settings, database)  # a failure to check (401, network) is this run's failure
        yield run
    except BaseException as exc:
        status = ("interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted))
                  else "skipped" if isinstance(exc, Skipped) else "failed")
        failure = store.database_failure(exc) if isinstance(exc, (sqlite3.Error, OSError)) else None
        message = redact(str(failure or exc) or type(exc).__name__, key)
        ended(run_id, status=status, summary=_summary(command, run), error=message)
        if failure is not None and failure is not exc:
            raise failure from None
        raise
    else:
        result: SyncResult = run["result"]
        summary = _summary(command, run)
        failure = ended(run_id, status=summary["status"], summary=summary, error=result.partial)
        if failure is not None:  # the data is committed, but the database cannot be written now
            raise failure
        run["summary"] = summary


@contextmanager
def recorded_run(settings: Settings, command: str, arguments: dict, wait: float):
    """Hold the lock, record a sync_runs row, and finish it whatever happens."""
    with locked_db(settings, wait) as database, run_record(settings, database, command, arguments) as run:
        yield run


# -- sync-all's steps: one per declared stream with a place in sync-all -------------------------
@dataclass(frozen=True)
class Step:
    """One stream of `sync-all`: its sync_runs command name, the scope a 403 means is missing,
    ``run(client, db, result)`` with the defaults a whole-account sync uses, and whether it is
    core (a missing scope fails sync-all) or optional (a missing scope skips the step)."""

    order: int
    command: str
    scope: str
    run: Callable
    arguments: dict
    core: bool = True


SYNC_ALL_STEPS: list[Step] = [
    Step(d.sync_all, d.command, d.scope, d.step, dict(d.arguments), d.core)
    for d in declarations() if d.sync_all is not None
]


def sync_commands() -> list[str]:
    """The commands `status --command` knows: every declared stream (each records its own run), and verify."""
    return [*dict.fromkeys(d.command for d in declarations()), "verify"]


class Skipped(KlaviyoSyncError):
    """An optional step the key has no scope for: recorded as ``skipped``, not a failure."""

    def __init__(self, message: str, scope: str):
        super().__init__(message)
        self.scope = scope


@contextmanager
def denied_as(decl: Declaration, scope: str | None = None):
    """A 403 becomes one line naming the scope (``scope``, or the one the refused path needs), exit 4."""
    try:
        yield
    except AuthError as exc:
        if exc.status == 403:
            raise AuthError(f"{decl.command}: permission denied: the API key lacks the "
                            f"{scope or scope_for(exc.endpoint, decl)} scope "
                            f"({exc.endpoint})", status=403, endpoint=exc.endpoint) from None
        raise
