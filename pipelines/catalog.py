"""Stage 1: the release's redshift catalogue, its clean-galaxy selection and its sky partitions."""

import dagster as dg
from pydantic import Field

from astroclip_core.formats.desi import GalaxySelection
from astroclip_core.ingest.catalog import build_release_catalog
from pipelines.metadata import materialize
from pipelines.partitions import releases_partitions, sky_partitions
from pipelines.resources import DesiSourceResource, SampleSkyResource, StorageResource

_SELECTION = GalaxySelection()  # read for its defaults only


class SelectionConfig(dg.Config):
    """The clean-galaxy selection; defaults and meaning are :class:`GalaxySelection`'s.

    An empty (null) value disables that cut.
    """

    spectype: str | None = Field(default=_SELECTION.spectype, description="Required SPECTYPE.")
    zwarn_zero: bool = Field(default=_SELECTION.zwarn_zero, description="Require ZWARN == 0.")
    deltachi2_min: float | None = Field(
        default=_SELECTION.deltachi2_min, description="Minimum DELTACHI2 (exclusive)."
    )
    objtype: str | None = Field(default=_SELECTION.objtype, description="Required OBJTYPE.")
    fiberstatus_zero: bool = Field(
        default=_SELECTION.fiberstatus_zero, description="Require COADD_FIBERSTATUS == 0."
    )
    primary_column: str | None = Field(
        default=_SELECTION.primary_column, description="Primary flag (one row per TARGETID)."
    )
    z_min: float | None = Field(
        default=_SELECTION.z_min, description="Minimum redshift (inclusive)."
    )
    z_max: float | None = Field(
        default=_SELECTION.z_max, description="Maximum redshift (exclusive)."
    )

    def selection(self) -> GalaxySelection:
        """The library's GalaxySelection with these cuts."""
        return GalaxySelection(**self.model_dump())


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
        source, storage.layout(), config.selection(), desi.retry.policy()
    )
    keys = list(result.partition_keys)
    known = set(context.instance.get_dynamic_partitions(sky_partitions.name))
    new_keys = [k for k in keys if k not in known]
    if new_keys:
        context.instance.add_dynamic_partitions(sky_partitions.name, new_keys)
    context.log.info(
        f"selected {result.rows} galaxies in {len(keys)} partitions ({len(new_keys)} new)"
    )
    partitions = dg.MetadataValue.json({"keys": keys, "new": new_keys})
    return materialize(result, {"partitions": partitions})
