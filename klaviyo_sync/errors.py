"""The exception tree. Each class carries the process exit code the CLI maps it to.

Exit codes (documented in the README):
  0  success
  1  unexpected internal error (a bug: run again with -v and report it)
  2  usage error: bad option value, missing API key, unknown metric
  3  Klaviyo API or network failure (after retries), including a refused off-host link
  4  authentication or permission failure (HTTP 401/403): the key is wrong or lacks a scope
  5  another sync holds the lock on this database
  6  partial success: data stored, but campaign statistics are missing (report quota spent)
  7  `status --max-age`: a sync is stale
  8  the database file cannot be opened or written
  9  `verify`: a settled day's event count differs from Klaviyo's
  130, 141, 143  interrupted (Ctrl-C), stdout closed early, terminated (SIGTERM)
"""

from __future__ import annotations

OK = 0
INTERNAL = 1
USAGE = 2
API = 3
AUTH = 4
LOCKED = 5
PARTIAL = 6
STALE = 7
DATABASE = 8
DIFFERS = 9
INTERRUPTED = 130  # Ctrl-C
BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout closed early (`| head`)
TERMINATED = 143  # 128 + SIGTERM


class KlaviyoSyncError(Exception):
    exit_code = INTERNAL


class UsageError(KlaviyoSyncError):
    exit_code = USAGE


class ApiError(KlaviyoSyncError):
    """A request failed for good: retries spent or an error that retrying cannot fix."""

    exit_code = API

    def __init__(self, message: str, *, status: int | None = None, endpoint: str | None = None):
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint


class AuthError(ApiError):
    exit_code = AUTH


class RateLimitExceeded(ApiError):
    """The API asked us to wait longer than we are willing to (e.g. a spent daily quota)."""

    def __init__(self, message: str, *, retry_after: float, endpoint: str | None = None):
        super().__init__(message, status=429, endpoint=endpoint)
        self.retry_after = retry_after


class UnsafeLinkError(ApiError):
    """A links.next pointed somewhere the API key must not go."""


class LockedError(KlaviyoSyncError):
    exit_code = LOCKED


class DatabaseError(KlaviyoSyncError):
    exit_code = DATABASE


class StaleError(KlaviyoSyncError):
    exit_code = STALE


def redact(text: str, secret: str | None) -> str:
    """Remove the API key from a message."""
    if not text:
        return text
    # A real key is long; replacing a one- or two-letter typo would mangle every message.
    if secret and len(secret) >= 8:
        text = text.replace(secret, "[REDACTED]")
    return text
