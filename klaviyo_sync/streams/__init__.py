"""The streams, grouped by family: one module holds a family's declarations and any engine of
its own. ``engine`` runs every declared stream; ``events`` (parallel time slices) and the report
code in ``campaigns`` are special engines, kept apart because the generic one would bend.

``declarations()`` is the registry of every stream: it imports each module of this package (so a
new module needs no import anywhere else) and returns their ``Declaration``s in sync-all order."""

from __future__ import annotations

import importlib
import pkgutil
import re

from ..ratelimit import path_regex
from .declare import Declaration, registered


def declarations() -> list[Declaration]:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return sorted(registered(), key=lambda d: (d.sync_all is None, d.sync_all or 0, d.command))


def declaration(command: str) -> Declaration:
    """The declaration of a sync command, e.g. ``declaration("sync-images")``."""
    return next(d for d in declarations() if d.command == command)


def _reads(decl: Declaration, path: str) -> bool:
    return any(re.fullmatch(path_regex(p), path) for p in decl.paths)


def scope_for(endpoint: str | None, decl: Declaration) -> str:
    """The scope a 403 at ``endpoint`` during ``decl``'s run is about: ``decl``'s own when the
    path is one it declares, else the scope of the stream that declares the path (sync-tags also
    reads the campaigns', flows', lists' and segments' listings, each under its own scope)."""
    path = (endpoint or "").rstrip("/")
    if path and not _reads(decl, path):
        for other in declarations():
            if _reads(other, path):
                return other.scope
    return decl.scope
