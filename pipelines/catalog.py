"""Stage 1: the release's redshift catalogue, its clean-galaxy selection and its sky partitions."""

import dagster as dg
from pydantic import Field

from astroclip_core.ingest.catalog import build_release_catalog
from astroclip_core.sky.healpix import partition_key
from pipelines.metadata import table_md
from pipelines.partitions import releases_partitions, sky_partitions
from pipelines.resources import DesiSourceResource, SampleSkyResource, StorageResource


class SelectionConfig(dg.Config):
    """The clean-galaxy selection (defaults from DESI's tutorials and DATA_SOURCES.md)."""

    spectype: str = Field(default="GALAXY", description="Required SPECTYPE.")
    zwarn_zero: bool = Field(default=True, description="Require ZWARN == 0.")
    deltachi2_min: float = Field(default=25.0, description="Minimum DELTACHI2 (exclusive).")
    objtype: str = Field(default="TGT", description="Required OBJTYPE.")
    fiberstatus_zero: bool = Field(default=True, description="Require COADD_FIBERSTATUS == 0.")
    primary_column: str = Field(
        default="ZCAT_PRIMARY", description="Primary flag (one row per TARGETID)."
    )
    z_min: float = Field(default=0.0, description="Minimum redshift (inclusive).")
    z_max: float = Field(default=1.0, description="Maximum redshift (exclusive).")


@dg.asset(
    partitions_def=releases_partitions,
    group_name="catalog",
    kinds={"fits", "parquet"},
    description=(
        "Downloads the release's redshift catalogue (zall-pix), reads only the needed columns, "
        "applies the clean-galaxy selection, records each cut's count, and registers one "
        "partition per nside-16 HEALPix pixel holding selected galaxies."
    ),
)
def release_catalog(
    context: dg.AssetExecutionContext,
    config: SelectionConfig,
    storage: StorageResource,
    sample_sky: SampleSkyResource,
    desi: DesiSourceResource,
) -> dg.MaterializeResult:
    source = desi.source(context.partition_key, sample_sky)
    result = build_release_catalog(
        source, storage.layout(), config.model_dump(), desi.retry.policy()
    )
    keys = [partition_key(source.release.name, p) for p in result.pixels]
    known = set(context.instance.get_dynamic_partitions(sky_partitions.name))
    new_keys = [k for k in keys if k not in known]
    if new_keys:
        context.instance.add_dynamic_partitions(sky_partitions.name, new_keys)
    context.log.info(
        f"selected {result.n_selected} galaxies in {len(keys)} partitions ({len(new_keys)} new)"
    )
    return dg.MaterializeResult(
        metadata={
            "n_input": result.report.n_input,
            "n_selected": result.n_selected,
            "selection_cuts": table_md(["cut", "rows removed"], result.report.cuts),
            "partitions": dg.MetadataValue.json({"keys": keys, "new": new_keys}),
            "galaxies_per_partition": table_md(
                ["partition", "galaxies"],
                [
                    (partition_key(source.release.name, p), n)
                    for p, n in result.counts_per_pixel.items()
                ],
            ),
            "path": dg.MetadataValue.path(result.path),
        }
    )
