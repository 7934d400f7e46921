"""Small helpers that turn library results into Dagster metadata values."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence

import dagster as dg
import pyarrow as pa


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
