"""The streams, grouped by family: one module holds a family's declarations and any engine of
its own. ``engine`` runs every declared stream; ``events`` (parallel time slices) and the report
code in ``campaigns`` are special engines, kept apart because the generic one would bend."""
