"""The settings every command shares (database, key, API address, verbosity, rate limits),
and the client they make."""

import sys
from dataclasses import dataclass
from pathlib import Path

from ..account import AccountMismatch, check_account
from ..client import DEFAULT_DEADLINE, KlaviyoClient, revision_age_warning
from ..errors import KlaviyoSyncError, UsageError, check_api_key
from ..ratelimit import RateLimiter, parse_limits
from ..streams.events import DEFAULT_WORKERS  # noqa: F401 - re-exported



@dataclass
class Settings:
    db: Path
    api_key: str | None
    base_url: str
    revision: str
    quiet: bool
    verbose: bool
    rate_limit: str | None = None
    request_deadline: float = DEFAULT_DEADLINE
    allow_http: bool = False
    # The last client made, and whether its account was checked against the database (once a run).
    last_client: KlaviyoClient | None = None
    account_checked: bool = False
    account_error: Exception | None = None

    def client(self, **kw) -> KlaviyoClient:
        if not self.api_key:
            raise UsageError("no API key: set KLAVIYO_API_KEY (or pass --api-key)")
        self.api_key = check_api_key(self.api_key)
        # -q silences it: an hourly cron job would mail the same line 24 times a day. `status`
        # shows it whatever -q says, so the operator still learns it from the monitoring line.
        warning = revision_age_warning(self.revision)
        if warning and not self.quiet:
            print(warning, file=sys.stderr)
        try:
            limits = parse_limits(self.rate_limit) if self.rate_limit else None
        except ValueError as exc:
            raise UsageError(f"--rate-limit: {exc}") from None
        try:
            self.last_client = KlaviyoClient(self.api_key, base_url=self.base_url, revision=self.revision,
                                             limiter=RateLimiter(limits, database=self.db, server=self.base_url),
                                             deadline=self.request_deadline,
                                             allow_http=self.allow_http, **kw)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return self.last_client


def ensure_account(settings: Settings, database, *, record: bool = True) -> None:
    """Once a run, before anything is written: the key's account must be the database's (exit 4,
    AccountMismatch, raised before any write). Only for a command that made a client. The check
    uses a client of its own (sharing the run's rate limiter), so the run's summary counts the
    stream's requests only. With ``record=False`` (before the run row exists) any other failure
    (a 401, the network) is kept and raised by the check inside run_record, which records it as
    the run's failure."""
    if settings.account_checked or settings.last_client is None:
        return
    if settings.account_error is not None:  # the check before the run row failed: this run's failure
        error, settings.account_error = settings.account_error, None
        if record:
            raise error
        settings.account_error = error
        return
    c = settings.last_client
    checker = KlaviyoClient(settings.api_key, base_url=c.base_url, revision=c.revision,
                            limiter=c.limiter, sleep=c._sleep, deadline=c.deadline, allow_http=True)
    try:
        check_account(checker, database)
        c.latency_hint = checker.stats.answer_time()
    except AccountMismatch:
        raise
    except KlaviyoSyncError as exc:
        if record:
            raise
        settings.account_error = exc
        return
    finally:
        checker.close()
    settings.account_checked = True


_STATE = {"verbose": False, "api_key": None}
