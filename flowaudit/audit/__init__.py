"""Batch audits of historical Parquet archives (``flowaudit audit``).

inputs.py  what is read: layouts found by schema, deterministic units of whole row groups
work.py    one unit: read, classify or match (the stream's code), write files, mark done
engine.py  units on an engine (polars: in process; dask: distributed), findings, manifest
cli.py     the command line
"""
