"""The command line: the Typer app with every command registered. Commands live in
``klaviyo_sync/commands/``, one module per family; what they share is in ``commands/base.py``."""

# Importing a command module registers its commands; --help lists them in this order.
from .commands import events, audience, campaigns, flows, declared, coupons, analytics, customers, verify, status, all, export  # noqa: F401, I001
from .commands.base import DEFAULT_WORKERS, PROG, Settings, app  # noqa: F401


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
