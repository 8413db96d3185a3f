"""Alert rules and their evaluation (SPEC §6): plain Python, no Dagster imports."""
