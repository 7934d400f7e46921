"""Evaluation: zero-shot k-NN regression, retrieval metrics, the report and its figures.

- ``report``: :func:`~astroclip_core.evaluation.report.evaluate` and
  :func:`~astroclip_core.evaluation.report.write_report` (the entry points; the protocol is in
  its docstring)
- ``knn``: exact nearest neighbours and distance-weighted k-NN regression
- ``metrics``: R², σ_NMAD, outlier fraction, bias
- ``retrieval``: partner ranks, recall@K, median rank
- ``photometry``: the (g−r, r−z, z) asinh-magnitude baseline features
- ``figures`` / ``gallery``: PCA and redshift figures; image + spectrum galleries
- ``synthetic``: embeddings with known answers, for tests, benchmarks and demos

Kept free of imports so that ``astroclip_core.search`` can use ``knn`` without matplotlib.
"""
