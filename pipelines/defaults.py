"""Defaults of the main run that more than one entry point shows (no imports: the CLI reads it).

``DEFAULT_TRAIN_STEPS``: the ``tiny`` preset's training length in ``astroclip run``, the
``contrastive_model`` asset's config and the runner. 1700 steps of batch 64 take about 10
minutes on 2 CPU cores, which keeps the whole default command (sky generation included) under
15 minutes; 1200 steps gave lower redshift R2 for both embeddings (see README, "Default run").
"""

DEFAULT_TRAIN_STEPS = 1700
