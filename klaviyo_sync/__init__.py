"""Copy a Klaviyo account into one SQLite file."""

__version__ = "0.1.0"
