"""Sky geometry: HEALPix partitioning and the positional cross-match."""
