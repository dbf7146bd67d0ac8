"""The command line: the Typer app with every command registered. Commands live in
``klaviyo_sync/commands/``, one module per family; what they share is in ``commands/base.py``.

Importing a command module registers its commands, and ``register()`` imports every module of
``klaviyo_sync/commands/`` (as ``klaviyo_sync.streams.declarations()`` does for the streams), so a
new command module needs no import here. --help lists the commands in ``ORDER``'s order, then
those of any other module in the order of its name."""

import importlib
import pkgutil

from . import commands
from .commands.base import DEFAULT_WORKERS, PROG, Settings, app  # noqa: F401

ORDER = ("events", "audience", "campaigns", "flows", "forms", "declared", "coupons", "analytics", "customers",
         "verify", "status", "all", "export")


def register() -> list[str]:
    """Import every command module (once); returns their names in the order they register."""
    names = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))
    ordered = [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]
    for name in ordered:
        importlib.import_module(f"{commands.__name__}.{name}")
    return ordered


register()


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
