"""Sky geometry: HEALPix partitioning and the positional cross-match."""

# The function lives in matching.py: a submodule named ``crossmatch`` would be shadowed by
# this re-export, and ``import astroclip_core.sky.crossmatch`` would then yield the function.
from astroclip_core.sky.matching import CrossMatch, crossmatch

__all__ = ["CrossMatch", "crossmatch"]
