"""Per-release and per-partition ingest steps: catalogue, spectra, imaging, match, cutouts, pairs.

Each step reads its inputs from the data root, writes one table there, and returns a typed
result with the figures the orchestration layer shows. The Dagster assets are thin wrappers.
"""
