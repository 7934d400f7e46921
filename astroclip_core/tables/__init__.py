"""Arrow schemas and the HEALPix-partitioned Parquet tables (pairs, embeddings).

The modules here are the only readers and writers of those tables: ``pairs`` (write, list,
read as Arrow, decode for training, look up for figures), ``embeddings`` (write, read) and
``schemas`` (every schema, including the interim matches table). Paths come from
:mod:`astroclip_core.storage`.
"""
