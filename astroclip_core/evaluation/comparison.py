"""Our R² next to the AstroCLIP paper's: the Markdown table of the report and the README.

The paper's figures (Parker et al. 2024, "AstroCLIP: a cross-modal foundation model for
galaxies", the galaxy-property R² table) are constants here; ours are read from a flat
``evaluation.json`` object. The paper's "properties" column is the mean R² over M*, Z, t_age
and sSFR; ours is the mean over the properties our truth has (log_mstar, metallicity,
log_ssfr), which the table's footnote says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The key prefix of the report's figures on the bright program's (BGS) rows alone, which
# astroclip_core.evaluation.report writes and the table's BGS rows read.
BGS_PREFIX = "bgs"

# The properties whose R² our "properties" column averages.
OUR_PROPERTIES = ("log_mstar", "metallicity", "log_ssfr")
MISSING = "—"


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's R² table."""

    input: str
    method: str
    redshift_r2: float
    properties_r2: float  # mean over M*, Z, t_age, sSFR


@dataclass(frozen=True)
class OurRow:
    """One of our methods: its label and the query type of its keys in evaluation.json."""

    input: str
    method: str
    query: str


PAPER_ROWS = (
    PaperRow("image", "k-NN, k = 64", 0.79, 0.47),
    PaperRow("image", "ResNet18, supervised", 0.77, 0.43),
    PaperRow("photometry", "MLP", 0.68, 0.42),
    PaperRow("spectrum", "k-NN", 0.99, 0.63),
)
OUR_ROWS = (
    OurRow("image", "k-NN, k = 64", "image"),
    OurRow("image", "MLP on the frozen embedding", "image_mlp"),
    OurRow("image", "ResNet18-layout CNN, supervised", "supervised_cnn"),
    OurRow("photometry", "k-NN, k = 64", "photometry"),
    OurRow("photometry", "MLP", "photometry_mlp"),
    OurRow("spectrum", "k-NN, k = 64", "spectrum"),
    OurRow("spectrum", "MLP on the frozen embedding", "spectrum_mlp"),
)
HEADER = ("source", "input", "method", "redshift", "properties")
FOOTNOTE = (
    "R² on the test split. AstroCLIP paper: Parker et al. 2024, its galaxy-property table; its "
    "*properties* column is the mean R² over M\\*, Z, t_age and sSFR. Ours: this run's "
    "`evaluation.json`; *properties* is the mean R² over the properties our truth has "
    "(log_mstar, metallicity, log_ssfr; no t_age), {MISSING} where a value is absent. Our CNN "
    "has ResNet18's layout at reduced width and input size, trained for a CPU budget "
    "(`definitions.supervised_cnn`). The paper's rows are on its PROVABGS sample: BGS "
    "galaxies at z < 0.6, with a BGS bank and training set. *This run* spans every tracer to "
    "z 1.6, whose wider spread of redshift raises R²; *this run, BGS only* (`bgs.*`, where the "
    "pairs have a bright program) repeats the k-NN and MLPs with bank, training rows and queries "
    "all from the bright program, the nearest footing to the paper's; it has no CNN."
).replace("{MISSING}", MISSING)
# The source label of the rows read from the ``bgs.*`` keys.
BGS_SOURCE = "this run, BGS only"


def _r2(report: Mapping[str, object], key: str) -> float | None:
    value = report.get(key)
    return float(value) if isinstance(value, int | float) else None


def our_scores(
    report: Mapping[str, object], query: str, prefix: str = ""
) -> tuple[float | None, float | None]:
    """(redshift R², mean property R²) of one query type; None where absent. ``prefix``
    (``"bgs."``) reads the figures of one sample of the rows.

    The property mean needs every one of :data:`OUR_PROPERTIES` (a partial mean would not be
    comparable from row to row).
    """
    props = [v for p in OUR_PROPERTIES if (v := _r2(report, f"{prefix}{p}.{query}.r2")) is not None]
    mean = sum(props) / len(props) if len(props) == len(OUR_PROPERTIES) else None
    return _r2(report, f"{prefix}redshift.{query}.r2"), mean


def comparison_rows(report: Mapping[str, object]) -> list[tuple[str, str, str, str, str]]:
    """The table's rows: the paper's, then ours, R² formatted to two decimals."""

    def fmt(v: float | None) -> str:
        return MISSING if v is None else f"{v:.2f}"

    rows = [
        ("AstroCLIP paper", r.input, r.method, fmt(r.redshift_r2), fmt(r.properties_r2))
        for r in PAPER_ROWS
    ]
    for r in OUR_ROWS:
        z, props = our_scores(report, r.query)
        rows.append(("this run", r.input, r.method, fmt(z), fmt(props)))
    if f"{BGS_PREFIX}.n_test" in report:
        for r in OUR_ROWS:
            z, props = our_scores(report, r.query, f"{BGS_PREFIX}.")
            rows.append((BGS_SOURCE, r.input, r.method, fmt(z), fmt(props)))
    return rows


def comparison_markdown(report: Mapping[str, object]) -> str:
    """The Markdown table (paper rows, then ours) with its footnote, from a flat report."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in comparison_rows(report)]
    return "\n".join(lines) + "\n\n" + FOOTNOTE + "\n"
