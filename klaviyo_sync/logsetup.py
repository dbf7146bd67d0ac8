"""Logging that cannot print the API key.

Messages are redacted where they are built (errors.redact), but a log record can carry text
nobody here wrote: an error body that echoes the request's Authorization header (some proxies
and firewall pages do), an exception from a library, a traceback. So the key is also removed
at the logging layer itself, from every record that reaches a handler (message, arguments,
traceback, stack), whichever logger emitted it: ours, urllib3's, requests', tenacity's.
"""

from __future__ import annotations

import logging
import sys

from .errors import redact

# Loggers of the libraries under us. Their records propagate to the root handlers (which redact);
# the filter on the logger itself also covers a handler someone attaches to it directly.
LIBRARY_LOGGERS = ("klaviyo_sync", "urllib3", "requests", "tenacity", "charset_normalizer")


class RedactingFilter(logging.Filter):
    """Rewrites a record so that its message, arguments and traceback hold no secret."""

    def __init__(self, secrets=()):
        super().__init__()
        self.secrets = [s for s in secrets if s]  # redact() removes every form of each

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = redact(text, secret)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is, redacted
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = self.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


class RedactingFormatter(logging.Formatter):
    """The last line of defence: the formatted text, whatever a record held, is redacted."""

    def __init__(self, fmt=None, datefmt=None, secrets=()):
        super().__init__(fmt, datefmt)
        self.redactor = RedactingFilter(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.scrub(super().format(record))


_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logging(verbose: bool, secrets=()) -> None:
    """Log to stderr (INFO with -v, WARNING otherwise), with every secret redacted."""
    secrets = [s for s in secrets if s]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(_FORMAT, secrets=secrets))
    handler.addFilter(RedactingFilter(secrets))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
            logger.removeFilter(old)
        logger.addFilter(RedactingFilter(secrets))
    # Python's fallback handler, used when a record finds no handler at all.
    if logging.lastResort is not None:
        logging.lastResort.setFormatter(RedactingFormatter(secrets=secrets))
