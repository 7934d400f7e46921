"""Partitions: one dynamic key per release, one per release and nside-16 HEALPix pixel.

Keys are built and parsed only by :mod:`astroclip_core.sky.healpix` (``<release>-<pixel>``).
A new release adds its own keys and never touches existing ones.
"""

import dagster as dg

from astroclip_core.sky.healpix import parse_partition_key

releases_partitions = dg.DynamicPartitionsDefinition(name="releases")
sky_partitions = dg.DynamicPartitionsDefinition(name="sky_partitions")

# Per-pixel assets read their release's catalogue; each pixel key names its release, but
# Dagster has no built-in mapping from "<release>-<pixel>" to "<release>", so lineage uses the
# all-partitions mapping and the assets select their release from the key.
from_release = dg.AllPartitionMapping()


def release_and_pixel(context: dg.AssetExecutionContext) -> tuple[str, int]:
    """(release, pixel) of the partition being materialized."""
    return parse_partition_key(context.partition_key)
