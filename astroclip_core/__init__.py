"""astroclip_core: the science library behind the AstroCLIP pipeline.

Readers and writers for the DESI and Legacy Surveys formats, the embedded sample sky,
HEALPix partitioning and cross-matching, Parquet tables, the contrastive model, training,
evaluation and search. Nothing in this package imports Dagster.
"""

__version__ = "0.1.0"
