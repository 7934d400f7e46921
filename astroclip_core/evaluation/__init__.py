"""Evaluation: zero-shot regression, retrieval metrics and figures."""
