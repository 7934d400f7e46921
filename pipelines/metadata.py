"""Small helpers that turn library results into Dagster metadata values.

Every asset turns its step's :class:`~astroclip_core.results.StepResult` into its
``MaterializeResult`` through :func:`materialize`, so all assets show their results alike.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence

import dagster as dg
import pyarrow as pa

from astroclip_core.results import Figure, MetadataEntry, SmallTable, StepResult


def table_md(header: Sequence[str], rows: Iterable[Sequence[object]]) -> dg.MetadataValue:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def png_md(png: bytes, alt: str) -> dg.MetadataValue:
    """An inline PNG shown in the asset's metadata panel."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def schema_md(schema: pa.Schema) -> dg.TableSchemaMetadataValue:
    """The Arrow schema as Dagster's table-schema metadata."""
    return dg.MetadataValue.table_schema(
        dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])
    )


def metadata_value(entry: MetadataEntry) -> dg.MetadataValue | int | float | str | bool:
    """One library metadata value as Dagster shows it (pictures inline, tables as Markdown)."""
    if isinstance(entry, Figure):
        return png_md(entry.png, entry.alt)
    if isinstance(entry, SmallTable):
        return table_md(entry.header, entry.rows)
    if isinstance(entry, pa.Schema):
        return schema_md(entry)
    return entry


def materialize(
    result: StepResult, extra: Mapping[str, dg.MetadataValue] | None = None
) -> dg.MaterializeResult:
    """The ``MaterializeResult`` of one step, the same way for every asset.

    Metadata: each output as a path under its name, ``rows`` and ``size_bytes`` when the step
    counts them, the step's own metadata, then ``extra`` (what only the orchestration knows,
    such as which partitions are new). Each of the step's checks becomes an asset check result.
    """
    md: dict[str, object] = {
        name: dg.MetadataValue.path(url) for name, url in result.outputs.items()
    }
    if result.rows is not None:
        md["rows"] = result.rows
    if result.size_bytes is not None:
        md["size_bytes"] = result.size_bytes
    md.update({name: metadata_value(entry) for name, entry in result.metadata.items()})
    md.update(extra or {})
    checks = [
        dg.AssetCheckResult(check_name=c.name, passed=c.passed, metadata={"detail": c.detail})
        for c in result.checks
    ]
    return dg.MaterializeResult(metadata=md, check_results=checks or None)
