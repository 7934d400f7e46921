"""What every step the orchestration calls returns: one typed result, whatever the step.

A step (fetch a partition's spectra, build a release's catalogue, train its model, ...) reports
the files or folders it wrote (``outputs``, each under the name it is shown by), the rows and
bytes it wrote (None where its output is not one table or file), and a dict of step-specific
figures. Metadata values are numbers, strings or the small typed values below, so the library
needs no Dagster; ``pipelines.metadata.materialize`` turns any result into an asset's
``MaterializeResult`` in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa


@dataclass(frozen=True)
class Figure:
    """A PNG picture shown with a result."""

    png: bytes
    alt: str


@dataclass(frozen=True)
class SmallTable:
    """A few rows shown as a table (the rows each selection cut removed, the split sizes)."""

    header: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]


@dataclass(frozen=True)
class CheckOutcome:
    """One data-quality check on a step's output."""

    name: str
    passed: bool
    detail: str


# A metadata value: a plain number or string, a picture, a small table, or an Arrow schema.
MetadataEntry = int | float | str | bool | Figure | SmallTable | pa.Schema


@dataclass(frozen=True)
class StepResult:
    """What one step wrote and reports.

    ``outputs`` maps a name to the URL of a file or folder the step wrote; the first is its
    main output. ``rows`` and ``size_bytes`` count what it wrote (None when the output is not
    one table or file). ``checks`` are data-quality checks on the output; ``partition_keys`` the
    partitions the output defines (only the catalogue step has any).
    """

    outputs: dict[str, str]
    rows: int | None
    size_bytes: int | None
    metadata: dict[str, MetadataEntry] = field(default_factory=dict)
    checks: tuple[CheckOutcome, ...] = ()
    partition_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.outputs:
            raise ValueError("a StepResult names at least one output, got none")
        for name in ("rows", "size_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"StepResult.{name} = {value} must be >= 0 or None")

    @property
    def path(self) -> str:
        """The URL of the main output (the first of ``outputs``)."""
        return next(iter(self.outputs.values()))
