"""Evaluation: k-NN regression, trained baselines, retrieval metrics, the report and figures.

- ``report``: :func:`~astroclip_core.evaluation.report.evaluate` and
  :func:`~astroclip_core.evaluation.report.write_report` (the entry points; the protocol is in
  its docstring)
- ``knn``: exact nearest neighbours and distance-weighted k-NN regression
- ``metrics``: R², σ_NMAD, outlier fraction, bias
- ``retrieval``: partner ranks, recall@K, median rank
- ``photometry``: the asinh-magnitude photometry features of the k-NN and MLP baselines
- ``baselines``: the trained baselines (MLP probes, photometry MLP, supervised CNN) and their
  configs; ``networks``: their MLP and ResNet18-layout CNN; ``images``: the pair images' centre
  crops the CNN reads
- ``comparison``: our R² beside the AstroCLIP paper's, as a Markdown table
- ``figures`` / ``gallery``: PCA and redshift figures; image + spectrum galleries
- ``synthetic``: embeddings with known answers, for tests, benchmarks and demos

Kept free of imports so that ``astroclip_core.search`` can use ``knn`` without matplotlib.
"""
