"""Paired studies (``python -m ettin_ft.compare``): the plan (models, revisions, seeds, folders), the runs (each a
recipe in its own process) and the report (table, REPORT.md, plots)."""
