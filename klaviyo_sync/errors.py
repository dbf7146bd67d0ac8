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
  10 a full pass would remove more than half the stored rows: refused without --allow-removals
  130, 141, 143  interrupted (Ctrl-C), stdout closed early, terminated (SIGTERM)
"""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

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
REMOVALS = 10
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


class RemovalsRefused(KlaviyoSyncError):
    """A full pass would remove more of the stored rows than a sync ever should on its own."""

    exit_code = REMOVALS


class StaleError(KlaviyoSyncError):
    exit_code = STALE


def secret_forms(secret: str | None) -> list[str]:
    """Every spelling of a secret that a message can carry: as given and stripped of surrounding
    whitespace; escaped as repr() and json.dumps() write it (a trailing newline becomes ``\\n``);
    URL-encoded (quote and quote_plus). Longest first, so no form leaves part of a longer one.
    A real key is long: forms shorter than 8 characters are left alone, since replacing a one-
    or two-letter typo would mangle every message."""
    if not secret:
        return []
    forms: set[str] = set()
    for s in {secret, secret.strip()}:
        forms.update({s, repr(s)[1:-1], s.encode("unicode_escape").decode("ascii"),
                      json.dumps(s)[1:-1], quote(s, safe=""), quote(s), quote_plus(s)})
    return sorted((f for f in forms if len(f) >= 8), key=len, reverse=True)


def redact(text: str, secret: str | None) -> str:
    """Remove the API key, in every form it can be spelt (``secret_forms``), from a message."""
    if not text:
        return text
    for form in secret_forms(secret):
        text = text.replace(form, "[REDACTED]")
    return text


def check_api_key(key: str) -> str:
    """The key stripped of surrounding whitespace (a secret read from a file, a CRLF env file);
    UsageError for a character a Klaviyo key cannot hold (control characters, spaces, anything
    outside printable ASCII). The message never shows the key."""
    key = key.strip()
    for i, ch in enumerate(key):
        if not 33 <= ord(ch) <= 126:
            what = ("a control character" if ord(ch) < 32 or 127 <= ord(ch) < 160
                    else "a space" if ch.isspace() else "a non-ASCII character")
            raise UsageError(f"the API key contains {what} (U+{ord(ch):04X}) at position {i + 1} of "
                             f"{len(key)}: a Klaviyo private key is pk_ followed by letters and digits "
                             "(check how KLAVIYO_API_KEY is set)")
    return key
