"""Partitions: one dynamic key per release, one per release and nside-16 HEALPix pixel.

Keys are built and parsed only by :mod:`astroclip_core.sky.healpix` (``<release>-<pixel>``).
A new release adds its own keys and never touches existing ones. A release key is added only
after the DESI source's listing shows the release (:func:`register_release`,
:func:`sync_releases`, the new-release sensor), so a mistyped name never becomes a partition;
the pixel keys are added by the ``release_catalog`` step.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from astroclip_core.releases import Release, ReleaseNotFoundError, find_release
from astroclip_core.sky.healpix import parse_partition_key
from pipelines.resources import DesiSourceResource, SampleSkyResource

releases_partitions = dg.DynamicPartitionsDefinition(name="releases")
sky_partitions = dg.DynamicPartitionsDefinition(name="sky_partitions")

# Per-pixel assets read their release's catalogue; each pixel key names its release, but
# Dagster has no built-in mapping from "<release>-<pixel>" to "<release>", so lineage uses the
# all-partitions mapping and the assets select their release from the key.
from_release = dg.AllPartitionMapping()


def release_and_pixel(context: dg.AssetExecutionContext) -> tuple[str, int]:
    """(release, pixel) of the partition being materialized."""
    return parse_partition_key(context.partition_key)


def register_release(
    instance: dg.DagsterInstance,
    name: str,
    desi: DesiSourceResource,
    sample_sky: SampleSkyResource,
) -> Release:
    """Add release ``name`` as a partition once the source's listing shows it; return it.

    With the sample sky as source (no ``root_url``), a release its size preset describes is
    generated first, and any other name is refused without generating anything. Raises
    :class:`ReleaseNotFoundError`, registering nothing, when the source does not publish
    ``name``.
    """
    if not desi.root_url:
        offered = sample_sky.can_generate()
        if name not in offered:
            raise ReleaseNotFoundError(
                f"release {name!r} is not one the {sample_sky.size!r} sample sky publishes "
                f"({', '.join(offered)}); set the DESI source's root_url for a real archive"
            )
        sample_sky.publish([name])
    release = find_release(desi.published_releases(sample_sky), name, desi.where(sample_sky))
    if not instance.has_dynamic_partition(releases_partitions.name, name):
        instance.add_dynamic_partitions(releases_partitions.name, [name])
    return release


def _offered_releases(desi: DesiSourceResource, sample_sky: SampleSkyResource) -> list[Release]:
    """What the source publishes; for the sample sky also what a step generates on first use."""
    if desi.root_url:
        return desi.published_releases(sample_sky)
    on_disk: list[Release] = []
    if Path(sample_sky.desi_folder()).is_dir():
        on_disk = desi.published_releases(sample_sky, generate_missing=False)
    configured = [r for r in sample_sky.offered() if r.name in sample_sky.releases]
    by_name = {r.name: r for r in configured} | {r.name: r for r in on_disk}
    return [by_name[n] for n in sorted(by_name)]


def sync_releases(
    instance: dg.DagsterInstance, desi: DesiSourceResource, sample_sky: SampleSkyResource
) -> tuple[list[Release], list[str]]:
    """Register every release the source publishes; return them and the names newly added.

    With the sample sky as source, that is the releases written in its folder and the ones
    configured in its ``releases`` (a step generates those on first use, so nothing is
    generated here). The pixel partitions follow when ``release_catalog`` runs.
    """
    released = _offered_releases(desi, sample_sky)
    known = set(instance.get_dynamic_partitions(releases_partitions.name))
    added = [r.name for r in released if r.name not in known]
    if added:
        instance.add_dynamic_partitions(releases_partitions.name, added)
    return released, added
