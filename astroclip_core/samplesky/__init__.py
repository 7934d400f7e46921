"""The sample sky: a synthetic survey in the real DESI and Legacy Surveys formats and layouts."""
