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
from astroclip_core.tables.schemas import PAIRS_SCHEMA
from pipelines.metadata import png_md, schema_md, table_md
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
    result = spectra_lib.fetch_partition_spectra(
        desi.source(release, sample_sky), storage.layout(), pixel, desi.retry.policy()
    )
    context.log.info(
        f"downloaded {result.extra['coadd_files']} coadd files, {result.n_rows} spectra"
    )
    return dg.MaterializeResult(metadata=result.metadata())


class ImagingConfig(dg.Config):
    """How far beyond the pixel border imaging sources are kept (for border matches)."""

    margin_arcsec: float = Field(default=10.0, description="Margin around the pixel, arcsec.")


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
        f"kept {result.n_rows} imaging sources from {result.extra['sweep_files']} sweeps"
    )
    return dg.MaterializeResult(metadata=result.metadata())


class CrossmatchConfig(dg.Config):
    """Positional match radius."""

    radius_arcsec: float = Field(default=1.0, description="Match radius, arcsec.")


@dg.asset(
    partitions_def=sky_partitions,
    deps=[spectra, imaging_sources],
    group_name="ingest",
    kinds={"parquet"},
    description="Matches each selected spectrum to its nearest imaging source within the radius, "
    "one to one, against the margin so border pairs are found exactly once; reports the "
    "position/ID agreement rate.",
)
def crossmatch(
    context: dg.AssetExecutionContext, config: CrossmatchConfig, storage: StorageResource
) -> dg.MaterializeResult:
    release, pixel = release_and_pixel(context)
    result = match.match_partition_stage(storage.layout(), release, pixel, config.radius_arcsec)
    context.log.info(f"matched {result.n_matched}/{result.n_spectra} spectra")
    md = result.metadata()
    md["separation_histogram"] = png_md(result.histogram_png(), "separations")
    return dg.MaterializeResult(metadata=md)


@dg.asset(
    partitions_def=sky_partitions,
    deps=[crossmatch],
    group_name="ingest",
    kinds={"fits", "parquet"},
    pool="legacysurvey_cutouts",
    description="Fetches one 152x152 g,r,z cutout per matched source through a capped request "
    "pool, with retries and a cache; failures go to the partition's failures table.",
)
def cutouts(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    sample_sky: SampleSkyResource,
    legacysurvey: LegacySurveySourceResource,
) -> dg.MaterializeResult:
    release, pixel = release_and_pixel(context)
    result = cutouts_lib.fetch_partition_cutouts(
        legacysurvey.source(sample_sky),
        storage.layout(),
        release,
        pixel,
        concurrency=legacysurvey.max_concurrent_requests,
        policy=legacysurvey.retry.policy(),
        log=context.log,
    )
    return dg.MaterializeResult(metadata=result.metadata())


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
    "(pairs/<release>/healpix=<pix>/part-0.parquet), atomically; re-running replaces it.",
)
def pairs(context: dg.AssetExecutionContext, storage: StorageResource):
    release, pixel = release_and_pixel(context)
    result = assemble_pairs(storage.layout(), release, pixel)
    context.log.info(f"wrote {result.n_rows} pairs to {result.path}")
    md = result.metadata()
    md["schema"] = schema_md(PAIRS_SCHEMA)
    if result.preview_png:
        md["sample_pairs"] = png_md(result.preview_png, "sample pairs")
    md["checks"] = table_md(
        ["check", "passed", "detail"], [(c.name, c.passed, c.detail) for c in result.checks]
    )
    yield dg.MaterializeResult(metadata=md)
    for c in result.checks:
        yield dg.AssetCheckResult(
            check_name=c.name, passed=c.passed, asset_key="pairs", metadata={"detail": c.detail}
        )
