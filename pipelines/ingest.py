"""Stage 2: per-partition ingest: spectra, imaging sources, cross-match, cutouts, pairs.

Each asset is one library call on one ``<release>-<pixel>`` partition; intermediate tables
live under ``interim/`` in the data root, the result under ``pairs/``.
"""

import dagster as dg
from pydantic import Field

from astroclip_core.ingest import cutouts as cutouts_lib
from astroclip_core.ingest import imaging, match
from astroclip_core.ingest import spectra as spectra_lib
from astroclip_core.ingest.pairs import PAIRS_CHECKS, assemble_pairs
from astroclip_core.results import StepResult
from astroclip_core.sky.partition_match import DEFAULT_MARGIN_ARCSEC, DEFAULT_RADIUS_ARCSEC
from pipelines.metadata import materialize
from pipelines.partitions import from_release, release_and_pixel, sky_partitions
from pipelines.resources import (
    DesiSourceResource,
    LegacySurveySourceResource,
    SampleSkyResource,
    StorageResource,
)

_CATALOG_DEP = dg.AssetDep("release_catalog", partition_mapping=from_release)


@dg.asset(
    partitions_def=sky_partitions,
    deps=[_CATALOG_DEP],
    group_name="ingest",
    kinds={"fits", "parquet"},
    description="Downloads only the coadd files holding this pixel's selected targets and merges "
    "their B, R, Z arms onto the 7781-pixel grid (flux, ivar, mask).",
)
def spectra(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    sample_sky: SampleSkyResource,
    desi: DesiSourceResource,
) -> dg.MaterializeResult:
    release, pixel = release_and_pixel(context)
    result = _fetch_spectra(storage, sample_sky, desi, release, pixel)
    context.log.info(
        f"downloaded {result.metadata['coadd_files']} coadd files, {result.rows} spectra"
    )
    return materialize(result)


def _fetch_spectra(
    storage: StorageResource,
    sample_sky: SampleSkyResource,
    desi: DesiSourceResource,
    release: str,
    pixel: int,
) -> StepResult:
    """The spectra step's library call (the step itself, and pairs fetching an evicted input)."""
    return spectra_lib.fetch_partition_spectra(
        desi.source(release, sample_sky), storage.layout(), pixel, desi.retry.policy()
    )


class ImagingConfig(dg.Config):
    """How far beyond the pixel border imaging sources are kept (for border matches).

    The crossmatch refuses a radius wider than this margin, which the sources table records.
    """

    margin_arcsec: float = Field(
        default=DEFAULT_MARGIN_ARCSEC, description="Margin around the pixel, arcsec."
    )


@dg.asset(
    partitions_def=sky_partitions,
    deps=[_CATALOG_DEP],
    group_name="ingest",
    kinds={"fits", "parquet"},
    description="Reads the DR9 sweep rows covering the pixel plus a margin.",
)
def imaging_sources(
    context: dg.AssetExecutionContext,
    config: ImagingConfig,
    storage: StorageResource,
    sample_sky: SampleSkyResource,
    legacysurvey: LegacySurveySourceResource,
) -> dg.MaterializeResult:
    release, pixel = release_and_pixel(context)
    result = imaging.fetch_partition_sources(
        legacysurvey.source(sample_sky),
        storage.layout(),
        release,
        pixel,
        config.margin_arcsec,
        legacysurvey.retry.policy(),
    )
    context.log.info(
        f"kept {result.rows} imaging sources from {result.metadata['sweep_files']} sweeps"
    )
    return materialize(result)


class CrossmatchConfig(dg.Config):
    """Positional match radius (at most the imaging sources' margin)."""

    radius_arcsec: float = Field(default=DEFAULT_RADIUS_ARCSEC, description="Match radius, arcsec.")


@dg.asset(
    partitions_def=sky_partitions,
    deps=[spectra, imaging_sources],
    group_name="ingest",
    kinds={"parquet"},
    description="Matches each selected spectrum to its nearest imaging source within the radius, "
    "one to one, against the margin so border pairs are found exactly once; a source claimed "
    "from both sides of a border goes to its nearest spectrum's partition (read from the "
    "release catalogue), so it is used once per release; reports the position/ID agreement rate.",
)
def crossmatch(
    context: dg.AssetExecutionContext, config: CrossmatchConfig, storage: StorageResource
) -> dg.MaterializeResult:
    release, pixel = release_and_pixel(context)
    result = match.match_partition_stage(storage.layout(), release, pixel, config.radius_arcsec)
    context.log.info(f"matched {result.metadata['matched']}/{result.metadata['spectra']} spectra")
    return materialize(result)


@dg.asset(
    partitions_def=sky_partitions,
    deps=[crossmatch],
    group_name="ingest",
    kinds={"fits", "parquet"},
    pool="legacysurvey_cutouts",
    description="One 152x152 g,r,z cutout per matched source, from the cutout service through a "
    "capped request pool or cut from DR9 coadd bricks, as the imaging setting and cost rule pick; "
    "retries and a cache; failures go to the partition's failures tables.",
)
def cutouts(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    sample_sky: SampleSkyResource,
    legacysurvey: LegacySurveySourceResource,
) -> dg.MaterializeResult:
    release, pixel = release_and_pixel(context)
    result = _fetch_cutouts(context, storage, sample_sky, legacysurvey, release, pixel)
    context.log.info(
        f"imaging {result.metadata['imaging']} (asked {legacysurvey.imaging}): estimates "
        f"service {result.metadata['imaging_service_s_estimate']} s, "
        f"bricks {result.metadata['imaging_bricks_s_estimate']} s"
    )
    return materialize(result)


def _fetch_cutouts(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    sample_sky: SampleSkyResource,
    legacysurvey: LegacySurveySourceResource,
    release: str,
    pixel: int,
) -> StepResult:
    """The cutouts step's library call (the step itself, and pairs fetching an evicted input)."""
    return cutouts_lib.fetch_partition_cutouts(
        legacysurvey.source(sample_sky),
        storage.layout(),
        release,
        pixel,
        concurrency=legacysurvey.max_concurrent_requests,
        policy=legacysurvey.retry.policy(),
        log=context.log,
        imaging=legacysurvey.imaging,
    )


@dg.asset(
    partitions_def=sky_partitions,
    deps=[crossmatch, cutouts, spectra, _CATALOG_DEP],
    group_name="ingest",
    kinds={"parquet"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="pairs", blocking=True, description=desc)
        for name, desc in PAIRS_CHECKS.items()
    ],
    description="Writes one Parquet file per pixel with the matched image-spectrum pairs "
    "(StorageLayout.pairs_file under pairs/<release>/), atomically; re-running replaces it. "
    "Then applies the raw cache policy: under evict or a size cap the partition's interim "
    "spectra and cutouts go too, and a re-run fetches them again first.",
)
def pairs(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    sample_sky: SampleSkyResource,
    desi: DesiSourceResource,
    legacysurvey: LegacySurveySourceResource,
) -> dg.MaterializeResult:
    release, pixel = release_and_pixel(context)
    # An input evicted after an earlier pairs run is fetched again, as re-running its step would.
    rederive = {
        spectra_lib.STAGE: lambda: _fetch_spectra(storage, sample_sky, desi, release, pixel),
        cutouts_lib.STAGE: lambda: _fetch_cutouts(
            context, storage, sample_sky, legacysurvey, release, pixel
        ),
    }
    result = assemble_pairs(storage.layout(), release, pixel, storage.raw_cache_policy(), rederive)
    context.log.info(
        f"wrote {result.rows} pairs to {result.path}; raw cache "
        f"{result.metadata['raw_cache_policy']}: {result.metadata['raw_files_removed']} files "
        f"removed; interim removed: {result.metadata['interim_removed']}"
    )
    return materialize(result)
