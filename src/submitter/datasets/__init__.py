"""Datasets: ingest uploads into Parquet, preview and aggregate them, version them by name."""
