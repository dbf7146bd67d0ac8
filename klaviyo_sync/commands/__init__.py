"""Typer commands, one module per family of commands."""
