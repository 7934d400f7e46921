"""Arrow schemas and the HEALPix-partitioned Parquet tables (pairs, embeddings)."""
