"""The evaluation report: k-NN regression, trained baselines, retrieval, and their files.

Protocol (ARCHITECTURE.md, "Evaluation protocol"):

- Split: the table's deterministic ``split`` column; ``train`` rows are the bank, ``test`` rows
  the queries.
- Regression: distance-weighted k-NN (:mod:`astroclip_core.evaluation.knn`, 1/distance on
  L2-normalised embeddings, k=64) for four query types:
  ``image`` (image queries, image bank), ``spectrum`` (spectrum queries, spectrum bank),
  ``image_to_spectrum`` (image queries, spectrum bank) and ``photometry`` (the baseline: the
  same k-NN on standardised (g−r, r−z, z) asinh magnitudes,
  :mod:`astroclip_core.evaluation.photometry`).
- Trained baselines (:mod:`astroclip_core.evaluation.baselines`, trained on the train rows,
  scored on the test rows): MLP probes on the frozen embeddings (``image_mlp``,
  ``spectrum_mlp``), an MLP on the catalogue photometry (``photometry_mlp``, features
  :func:`~astroclip_core.evaluation.photometry.photometry_mlp_features`) and, when the pair
  images are given, a supervised CNN trained from the images (``supervised_cnn``).
- Targets: redshift always; ``log_mstar``, ``log_ssfr``, ``metallicity`` where a truth table
  (joined on targetid) gives them. A bank or query row with a NaN target is left out of that
  target only.
- Retrieval on the test split (:mod:`astroclip_core.evaluation.retrieval`).
- The paper's footing: AstroCLIP's redshift and property rows were measured on its PROVABGS
  cross-match, DESI BGS galaxies at z < 0.6, with a BGS bank and BGS training rows. When the
  pairs' DESI ``program`` is given, the k-NN and MLP figures are repeated on the bright
  program's rows alone (our pairs are all SPECTYPE GALAXY, so these are the BGS): bank,
  training rows and queries all bright; no CNN there (CPU budget); keys ``bgs.*``.

``evaluation.json`` is one JSON object with flat dotted keys, so ``report["redshift.image.r2"]``
works directly: ``n_train``, ``n_test``, ``k``, ``model``; ``<target>.<query>.r2`` and
``<target>.<query>.n``; ``redshift.<query>.{sigma_nmad,outlier_fraction,bias,mean_bias}``;
``retrieval.<direction>.{recall_at_1,recall_at_5,recall_at_10,median_rank,n}`` for
``image_to_spectrum`` and ``spectrum_to_image``;
``baselines.<query>.{seconds,epochs,best_epoch,steps,params}`` for each trained baseline; and
``definitions.*`` strings (``definitions.supervised_cnn`` states the CNN's compute budget);
and, when the bright program has enough rows, ``bgs.n_train``, ``bgs.n_test`` and the
``bgs.<target>.<query>.*`` keys of the k-NN and MLP query types.
Undefined values (R² of a constant truth) are written as ``null``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astroclip_core import fsio
from astroclip_core.evaluation.baselines import (
    BaselineFit,
    BaselinesConfig,
    cnn_definition,
    fit_predict_cnn,
    fit_predict_mlp,
    mlp_definition,
)
from astroclip_core.evaluation.comparison import BGS_PREFIX
from astroclip_core.evaluation.figures import (
    PcaProjection,
    pca_figure,
    pca_projection,
    redshift_figure,
)
from astroclip_core.evaluation.gallery import (
    RetrievalExample,
    retrieval_examples,
    retrieval_examples_figure,
)
from astroclip_core.evaluation.images import GalaxyImages
from astroclip_core.evaluation.knn import DEFAULT_K, knn_regress, l2_normalise
from astroclip_core.evaluation.metrics import RedshiftMetrics, r2_score, redshift_metrics
from astroclip_core.evaluation.photometry import (
    photometry_features,
    photometry_mlp_features,
    standardise,
)
from astroclip_core.evaluation.retrieval import RetrievalMetrics, retrieval_metrics
from astroclip_core.plots import render_png
from astroclip_core.tables.embeddings import embedding_matrix
from astroclip_core.tables.pairs import PairLookup, pairs_lookup

# query type -> (query column, bank column); "photometry" is handled apart
EMBEDDING_QUERIES: dict[str, tuple[str, str]] = {
    "image": ("image_embedding", "image_embedding"),
    "spectrum": ("spectrum_embedding", "spectrum_embedding"),
    "image_to_spectrum": ("image_embedding", "spectrum_embedding"),
}
KNN_QUERY_TYPES = (*EMBEDDING_QUERIES, "photometry")
# MLP probe query type -> the frozen embedding column it reads
PROBE_QUERIES: dict[str, str] = {
    "image_mlp": "image_embedding",
    "spectrum_mlp": "spectrum_embedding",
}
MLP_QUERY_TYPES = (*PROBE_QUERIES, "photometry_mlp")
TRAINED_QUERY_TYPES = (*MLP_QUERY_TYPES, "supervised_cnn")
QUERY_TYPES = (*KNN_QUERY_TYPES, *TRAINED_QUERY_TYPES)
PHOTOMETRY_COLUMNS = ("flux_g", "flux_r", "flux_z")
# The paper's footing (module docstring; its keys' prefix is comparison.BGS_PREFIX): the DESI
# program whose pairs are the BGS sample, and the fewest rows it needs (a k-NN bank, and train
# rows for the MLPs' 15% hold-out; a smaller sample gives no bgs keys, not meaningless ones).
BGS_PROGRAM = "bright"
BGS_MIN_TRAIN, BGS_MIN_TEST = 20, 5
BGS_DEFINITION = (
    "bgs.*: the bright program's pairs only (DESI BGS; AstroCLIP's rows are on its PROVABGS "
    "BGS sample, z < 0.6): k-NN bank, MLP training rows and queries all bright; no CNN"
)
PROPERTIES = ("log_mstar", "log_ssfr", "metallicity")
DEFINITIONS = {
    "definitions.knn": "k-NN regression, weights 1/Euclidean distance on L2-normalised embeddings",
    "definitions.photometry": "k-NN on train-standardised (g-r, r-z, z) asinh magnitudes",
    "definitions.bias": "median of (z_pred - z)/(1 + z); mean_bias is the mean",
    "definitions.outlier": "|z_pred - z|/(1 + z) > 0.15",
    "definitions.retrieval": "rank of the true partner among the test split by cosine; 1 = top",
}


@dataclass(frozen=True)
class PropertyMetrics:
    """R² of one predicted property on ``n`` test galaxies with known truth."""

    r2: float
    n: int


@dataclass(frozen=True, eq=False)
class SampleFigures:
    """The k-NN and MLP figures of one sample of the rows (bank, training rows and queries all
    from it): the ``bgs.*`` keys."""

    n_train: int
    n_test: int
    redshift: dict[str, RedshiftMetrics]  # query type -> metrics
    properties: dict[str, dict[str, PropertyMetrics]]  # property -> query type -> metrics


def _figure_keys(
    redshift: dict[str, RedshiftMetrics],
    properties: dict[str, dict[str, PropertyMetrics]],
    prefix: str = "",
) -> dict[str, float | int]:
    """``<prefix><target>.<query>.<metric>`` keys of redshift and property metrics."""
    out: dict[str, float | int] = {}
    for query, m in redshift.items():
        for name in ("r2", "sigma_nmad", "outlier_fraction", "bias", "mean_bias", "n"):
            out[f"{prefix}redshift.{query}.{name}"] = getattr(m, name)
    for prop, per_query in properties.items():
        for query, pm in per_query.items():
            out[f"{prefix}{prop}.{query}.r2"] = pm.r2
            out[f"{prefix}{prop}.{query}.n"] = pm.n
    return out


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """All numbers of one evaluation, plus the arrays the figures need."""

    model: str
    k: int
    n_train: int
    n_test: int
    redshift: dict[str, RedshiftMetrics]  # query type -> metrics
    properties: dict[str, dict[str, PropertyMetrics]]  # property -> query type -> metrics
    retrieval: dict[str, RetrievalMetrics]  # "image_to_spectrum" / "spectrum_to_image"
    z_test: np.ndarray  # (n_test,) true redshift of the test rows
    z_pred: dict[str, np.ndarray]  # query type -> (n_test,) predicted redshift
    pca: PcaProjection
    examples: tuple[RetrievalExample, ...] = field(default=())
    baselines: dict[str, BaselineFit] = field(default_factory=dict)  # trained query type -> fit
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))
    bgs: SampleFigures | None = None  # the bright program's rows alone (module docstring)

    def to_flat_dict(self) -> dict[str, float | int | str | None]:
        """The flat dotted-key dictionary written to ``evaluation.json``."""
        out: dict[str, float | int | str | None] = {
            "model": self.model,
            "k": self.k,
            "n_train": self.n_train,
            "n_test": self.n_test,
        }
        out.update(_figure_keys(self.redshift, self.properties))
        if self.bgs is not None:
            out[f"{BGS_PREFIX}.n_train"] = self.bgs.n_train
            out[f"{BGS_PREFIX}.n_test"] = self.bgs.n_test
            out.update(_figure_keys(self.bgs.redshift, self.bgs.properties, f"{BGS_PREFIX}."))
        for direction, rm in self.retrieval.items():
            for name in ("recall_at_1", "recall_at_5", "recall_at_10", "median_rank", "n"):
                out[f"retrieval.{direction}.{name}"] = getattr(rm, name)
        for query, fit in self.baselines.items():
            out[f"baselines.{query}.seconds"] = round(fit.seconds, 2)
            out[f"baselines.{query}.epochs"] = fit.epochs
            out[f"baselines.{query}.best_epoch"] = fit.best_epoch
            out[f"baselines.{query}.steps"] = fit.steps
            out[f"baselines.{query}.params"] = fit.n_params
        out.update(self.definitions)
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()
        }


def _aligned_columns(
    targetid: np.ndarray, table: pa.Table, columns: tuple[str, ...], what: str, required: bool
) -> dict[str, np.ndarray]:
    """``columns`` of ``table`` as float64 arrays in the order of ``targetid``.

    Rows missing from ``table`` raise when ``required``, else become NaN.
    """
    if "targetid" not in table.column_names:
        raise ValueError(f"{what} table lacks column 'targetid'")
    other = table.column("targetid").cast(pa.int64())
    if pc.count_distinct(other).as_py() != len(other):
        raise ValueError(f"{what} table has duplicate targetids")
    index = pc.index_in(pa.array(targetid), value_set=other.combine_chunks())
    missing = index.null_count
    if missing and required:
        raise ValueError(f"{what} table lacks {missing} of the {len(targetid)} targetids")
    rows = index.to_numpy(zero_copy_only=False)  # float with NaN where missing
    found = np.isfinite(rows)
    out = {}
    for name in columns:
        if name not in table.column_names:
            raise ValueError(f"{what} table lacks column {name!r}")
        values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        col = np.full(len(targetid), np.nan)
        col[found] = values[rows[found].astype(np.int64)]
        out[name] = col
    return out


def _split_masks(embeddings: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    split = np.asarray(embeddings.column("split").to_pylist(), dtype=object)
    unknown = set(split.tolist()) - {"train", "test"}
    if unknown:
        raise ValueError(f"embeddings split column has values {sorted(map(str, unknown))}")
    train, test = split == "train", split == "test"
    if not train.any() or not test.any():
        raise ValueError(f"need train and test rows, got {train.sum()} train, {test.sum()} test")
    return train, test


def _predict(
    query: np.ndarray, bank: np.ndarray, targets: dict[str, np.ndarray], k: int
) -> dict[str, np.ndarray]:
    """k-NN predictions (Q,) per target; one search per set of targets sharing a finite mask."""
    groups: dict[bytes, list[str]] = {}
    for name, values in targets.items():
        groups.setdefault(np.isfinite(values).tobytes(), []).append(name)
    out = {}
    for names in groups.values():
        usable = np.isfinite(targets[names[0]])
        if not usable.any():
            raise ValueError(f"no train row has a finite value of {names}")
        values = np.stack([targets[n][usable] for n in names], axis=1)  # (N_usable, T)
        pred = knn_regress(query, bank[usable], values, k=min(k, int(usable.sum())))
        out.update({n: pred[:, i] for i, n in enumerate(names)})
    return out


def _property_metrics(
    truth_test: dict[str, np.ndarray], predictions: dict[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, PropertyMetrics]]:
    """R² per property and query type over the test rows whose truth is known."""
    out: dict[str, dict[str, PropertyMetrics]] = {}
    for prop in sorted(truth_test.keys() - {"redshift"}):
        known = np.isfinite(truth_test[prop])
        if known.any():
            out[prop] = {
                q: PropertyMetrics(
                    r2_score(truth_test[prop][known], p[prop][known]), int(known.sum())
                )
                for q, p in predictions.items()
            }
    return out


@dataclass(frozen=True, eq=False)
class _Inputs:
    """What every query type reads, row i = embeddings row i."""

    vectors: dict[str, np.ndarray]  # embedding column -> (N, D) float32, unit rows
    fluxes: dict[str, np.ndarray]  # flux_g/r/z -> (N,) float64 nanomaggies
    images: np.ndarray | None  # (N, 3, S, S) float32 nanomaggies, or None (no CNN)


def _knn_predictions(
    inputs: _Inputs, targets: dict[str, np.ndarray], train: np.ndarray, test: np.ndarray, k: int
) -> dict[str, dict[str, np.ndarray]]:
    """Query type -> target -> (n_test,) k-NN predictions, for :data:`KNN_QUERY_TYPES`."""
    bank_targets = {name: values[train] for name, values in targets.items()}
    predictions = {
        query: _predict(inputs.vectors[q_col][test], inputs.vectors[b_col][train], bank_targets, k)
        for query, (q_col, b_col) in EMBEDDING_QUERIES.items()
    }
    features = photometry_features(pa.table(inputs.fluxes))  # (N, 3)
    phot_train, phot_test = standardise(features[train], features[test])
    predictions["photometry"] = _predict(phot_test, phot_train, bank_targets, k)
    return predictions


def _trained_fits(
    inputs: _Inputs,
    y_train: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    config: BaselinesConfig,
    cnn: bool = True,
) -> dict[str, BaselineFit]:
    """Query type -> fit of each trained baseline (the CNN only when there are images and
    ``cnn``); ``y_train`` (N_train, T) holds the train rows' targets, NaN where unknown."""
    fits = {
        query: fit_predict_mlp(
            inputs.vectors[column][train], y_train, inputs.vectors[column][test], config.mlp
        )
        for query, column in PROBE_QUERIES.items()
    }
    features = photometry_mlp_features(pa.table(inputs.fluxes))  # (N, 5)
    fits["photometry_mlp"] = fit_predict_mlp(features[train], y_train, features[test], config.mlp)
    if cnn and inputs.images is not None:
        fits["supervised_cnn"] = fit_predict_cnn(
            inputs.images[train], y_train, inputs.images[test], config.cnn
        )
    return fits


def _train_targets(targets: dict[str, np.ndarray], train: np.ndarray) -> np.ndarray:
    """(N_train, T) targets of the train rows in ``targets`` order; raises when one has no
    finite train value (nothing to learn it from)."""
    y = np.stack([values[train] for values in targets.values()], axis=1)
    empty = [name for name, col in zip(targets, y.T, strict=True) if not np.isfinite(col).any()]
    if empty:
        raise ValueError(f"no train row has a finite value of {empty}")
    return y


def _programs(targetid: np.ndarray, programs: pa.Table) -> np.ndarray:
    """(N,) DESI program (object array, None where unknown) of each ``targetid`` row, from a
    table of targetid and program."""
    for name in ("targetid", "program"):
        if name not in programs.column_names:
            raise ValueError(f"programs table lacks column {name!r}")
    other = programs.column("targetid").cast(pa.int64()).combine_chunks()
    index = pc.index_in(pa.array(targetid), value_set=other).to_numpy(zero_copy_only=False)
    found = np.isfinite(index)  # float with NaN where missing
    values = np.asarray(programs.column("program").to_pylist(), dtype=object)
    out = np.full(len(targetid), None, dtype=object)
    out[found] = values[index[found].astype(np.int64)]
    return out


def _predictions_with_fits(
    predictions: dict[str, dict[str, np.ndarray]],
    fits: dict[str, BaselineFit],
    names: list[str],
) -> dict[str, dict[str, np.ndarray]]:
    """``predictions`` plus each fit's (n_test,) prediction per target, ``names`` in order."""
    out = dict(predictions)
    for query, fit in fits.items():
        out[query] = {n: fit.prediction[:, i] for i, n in enumerate(names)}
    return out


def _bgs_figures(
    inputs: _Inputs,
    targets: dict[str, np.ndarray],
    train: np.ndarray,
    test: np.ndarray,
    bright: np.ndarray,
    k: int,
    config: BaselinesConfig,
) -> SampleFigures | None:
    """The k-NN and MLP figures with bank, training rows and queries all ``bright``; None when
    it has fewer than :data:`BGS_MIN_TRAIN` train or :data:`BGS_MIN_TEST` test rows."""
    train, test = train & bright, test & bright
    if train.sum() < BGS_MIN_TRAIN or test.sum() < BGS_MIN_TEST:
        return None
    # a property none of the sample's train rows knows cannot be learnt or predicted here
    targets = {n: v for n, v in targets.items() if np.isfinite(v[train]).any()}
    predictions = _knn_predictions(inputs, targets, train, test, k)
    fits = _trained_fits(inputs, _train_targets(targets, train), train, test, config, cnn=False)
    predictions = _predictions_with_fits(predictions, fits, list(targets))
    z_test = targets["redshift"][test]
    return SampleFigures(
        n_train=int(train.sum()),
        n_test=int(test.sum()),
        redshift={q: redshift_metrics(z_test, p["redshift"]) for q, p in predictions.items()},
        properties=_property_metrics({n: v[test] for n, v in targets.items()}, predictions),
    )


def evaluate(
    embeddings: pa.Table,
    photometry: pa.Table,
    truth: pa.Table | None = None,
    k: int = DEFAULT_K,
    images: GalaxyImages | None = None,
    baselines: BaselinesConfig | None = None,
    programs: pa.Table | None = None,
) -> EvaluationReport:
    """Run the whole evaluation protocol (module docstring) on one model's embeddings table.

    ``photometry`` has targetid, flux_g, flux_r, flux_z (nanomaggies) for every embedded
    galaxy; ``truth`` optionally has targetid plus any of log_mstar, log_ssfr, metallicity;
    ``images`` (every embedded galaxy's, any order) enables the supervised CNN. ``k`` is
    capped at the number of usable train rows; ``baselines`` sets the trained baselines'
    budgets (the defaults of :class:`BaselinesConfig` when None). ``programs`` (targetid and
    the pairs' DESI ``program``) adds the figures of the bright program's rows alone.
    """
    config = baselines or BaselinesConfig()
    targetid = embeddings.column("targetid").to_numpy(zero_copy_only=False).astype(np.int64)
    train, test = _split_masks(embeddings)
    z = embeddings.column("z").to_numpy(zero_copy_only=False).astype(np.float64)
    if not np.isfinite(z).all():
        raise ValueError(f"embeddings column 'z' has {int((~np.isfinite(z)).sum())} null/NaN rows")
    targets = {"redshift": z}
    if truth is not None:
        present = tuple(p for p in PROPERTIES if p in truth.column_names)
        targets.update(_aligned_columns(targetid, truth, present, "truth", required=False))
    inputs = _Inputs(
        vectors={
            c: l2_normalise(embedding_matrix(embeddings, c), c)
            for c in ("image_embedding", "spectrum_embedding")
        },
        fluxes=_aligned_columns(targetid, photometry, PHOTOMETRY_COLUMNS, "photometry", True),
        images=None if images is None else images.aligned(targetid),
    )
    predictions = _knn_predictions(inputs, targets, train, test, k)
    fits = _trained_fits(inputs, _train_targets(targets, train), train, test, config)
    predictions = _predictions_with_fits(predictions, fits, list(targets))
    definitions = {**DEFINITIONS, "definitions.mlp": mlp_definition(config.mlp)}
    bgs = None
    if programs is not None:
        bright = _programs(targetid, programs) == BGS_PROGRAM
        bgs = _bgs_figures(inputs, targets, train, test, bright, k, config)
    if bgs is not None:
        definitions[f"definitions.{BGS_PREFIX}"] = BGS_DEFINITION
    if "supervised_cnn" in fits:
        definitions["definitions.supervised_cnn"] = cnn_definition(
            config.cnn, fits["supervised_cnn"]
        )

    z_test = z[test]
    redshift = {q: redshift_metrics(z_test, p["redshift"]) for q, p in predictions.items()}
    properties = _property_metrics({n: v[test] for n, v in targets.items()}, predictions)
    image, spectrum = inputs.vectors["image_embedding"], inputs.vectors["spectrum_embedding"]
    retrieval = {
        "image_to_spectrum": retrieval_metrics(image[test], spectrum[test]),
        "spectrum_to_image": retrieval_metrics(spectrum[test], image[test]),
    }
    return EvaluationReport(
        model=_model_name(embeddings),
        k=min(k, int(train.sum())),
        n_train=int(train.sum()),
        n_test=int(test.sum()),
        redshift=redshift,
        properties=properties,
        retrieval=retrieval,
        z_test=z_test,
        z_pred={q: predictions[q]["redshift"] for q in KNN_QUERY_TYPES},
        pca=pca_projection(image, spectrum, z),
        examples=retrieval_examples(targetid, z, image, spectrum, test),
        baselines=fits,
        definitions=definitions,
        bgs=bgs,
    )


def _model_name(embeddings: pa.Table) -> str:
    if "model" not in embeddings.column_names:
        return ""
    names = pc.unique(embeddings.column("model")).to_pylist()
    if len(names) != 1:
        raise ValueError(f"embeddings table mixes models {names}; evaluate one model at a time")
    return str(names[0])


def write_report(
    report: EvaluationReport, out_dir: str, pairs: pa.Table | str | PairLookup | None = None
) -> dict[str, str]:
    """Write ``evaluation.json`` and the figures under ``out_dir`` (local path or fsspec URL).

    Every file is written atomically. ``pairs`` (a pairs table, a pairs folder URL, or a
    :data:`PairLookup`) enables the retrieval-examples figure. Returns file name -> URL.
    """
    base = out_dir.rstrip("/")
    written: dict[str, str] = {}

    def put(name: str, data: bytes) -> None:
        url = f"{base}/{name}"
        fsio.atomic_write_bytes(url, data)
        written[name] = url

    put("evaluation.json", json.dumps(report.to_flat_dict(), indent=1, sort_keys=True).encode())
    put("pca.png", render_png(pca_figure(report.pca, report.model)))
    put(
        "redshift_knn.png",
        render_png(redshift_figure(report.z_test, report.z_pred, report.redshift)),
    )
    if pairs is not None and report.examples:
        lookup = pairs if callable(pairs) else pairs_lookup(pairs)
        put(
            "retrieval_examples.png", render_png(retrieval_examples_figure(report.examples, lookup))
        )
    return written
