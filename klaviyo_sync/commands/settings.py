"""The settings every command shares (database, key, API address, verbosity, rate limits),
and the client they make."""

import sys
from dataclasses import dataclass
from pathlib import Path

from ..client import KlaviyoClient, revision_age_warning
from ..errors import UsageError
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

    def client(self, **kw) -> KlaviyoClient:
        if not self.api_key:
            raise UsageError("no API key: set KLAVIYO_API_KEY (or pass --api-key)")
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
            return KlaviyoClient(self.api_key, base_url=self.base_url, revision=self.revision,
                                 limiter=RateLimiter(limits, database=self.db, server=self.base_url), **kw)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


_STATE = {"verbose": False, "api_key": None}
