"""The command line: the Typer app with every command registered. Commands live in
``klaviyo_sync/commands/``, one module per family; what they share is in ``commands/base.py``."""

from .commands import campaigns, events, status  # noqa: F401  (registers the commands)
from .commands.base import DEFAULT_WORKERS, PROG, Settings, app  # noqa: F401


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
