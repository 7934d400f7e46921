"""How much of a k-NN redshift R² is the bank's size, not the embedding?

The paper's k = 64 was chosen for a bank of ~160k train galaxies (k / N ~ 0.04%); over the
default sky's ~2.4k train spectra, 64 neighbours are 2.7% of the bank and span a wide range of
redshift wherever the bank is sparse (ELGs above z 1.3, the ends of each tracer's n(z)). This
reads a finished run's embeddings table and prints, for random sub-banks of the train split
(fractions ``--fractions``, ``--repeats`` draws each), the test split's R² with k = 64 and with
k scaled with the bank (k / N held at 64 / N_full), plus R² against k on the full bank::

    .venv/bin/python bench/knn_bank.py --storage /tmp/x/storage [--model tiny-v1]

If R² at k = 64 falls as the bank shrinks while R² at a constant k / N stays flat, the k = 64
figure is limited by the bank's size. On a sample-sky run it also prints, from the sky's truth
table, where the k = 64 error lies by tracer (BGS, LRG, ELG): each one's R², sigma_NMAD,
outliers, share of the test split's squared error, the z spread of its queries' 64 neighbours
and the fraction of them of the same tracer. ``--recall-n 590`` adds image->spectrum recall@10
over random test subsets of that many pairs, so runs with test splits of different sizes
(``--sky-scale``) compare at the same number of candidates. ``--program bright`` keeps only the
pairs of that DESI program, bank and queries both: BGS is the bright program's galaxy sample,
and AstroCLIP's redshift and property rows were measured on BGS galaxies (the PROVABGS
cross-match, z < 0.6) with a bank of BGS galaxies. Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astroclip_core import fsio  # noqa: E402
from astroclip_core.evaluation.knn import (  # noqa: E402
    DEFAULT_K,
    knn_regress,
    l2_normalise,
    nearest_neighbours,
)
from astroclip_core.evaluation.metrics import redshift_metrics  # noqa: E402
from astroclip_core.evaluation.retrieval import retrieval_metrics  # noqa: E402
from astroclip_core.samplesky.service import truth_path, truth_tracers  # noqa: E402
from astroclip_core.storage import StorageLayout  # noqa: E402
from astroclip_core.tables.embeddings import embedding_matrix, read_embeddings  # noqa: E402
from astroclip_core.tables.pairs import read_pairs_columns  # noqa: E402


def main() -> int:
    """Parse the options, read the embeddings, print the two scans."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", required=True, help="data root of a finished astroclip run")
    parser.add_argument("--release", default="edr")
    parser.add_argument("--model", default=None, help="model name (default: the current one)")
    parser.add_argument("--column", default="spectrum_embedding")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.125, 0.25, 0.5, 1.0])
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 3, 5, 8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--recall-n", type=int, default=0, help="test pairs per recall draw")
    parser.add_argument("--program", default=None, help="keep only this DESI program's pairs")
    args = parser.parse_args()
    layout = StorageLayout(args.storage)
    name = args.model or json.loads(fsio.read_bytes(layout.current_model(args.release)))["model"]
    columns = ["targetid", "split", "z", args.column]
    if args.recall_n:
        columns += ["image_embedding", "spectrum_embedding"]
    table = read_embeddings(layout.embeddings_dir(args.release, name), sorted(set(columns)))
    split = np.asarray(table.column("split").to_pylist(), dtype=object)
    z = table.column("z").to_numpy(zero_copy_only=False).astype(np.float64)
    emb = l2_normalise(embedding_matrix(table, args.column), args.column)  # (N, D)
    keep = np.isfinite(z)
    if args.program:
        keep &= _program(layout, args.release, table) == args.program
    train = np.flatnonzero((split == "train") & keep)
    test = (split == "test") & keep
    rng = np.random.default_rng(0)
    out: dict[str, object] = {"model": name, "n_train": int(train.size), "n_test": int(test.sum())}
    print(f"{name}: {train.size} train, {int(test.sum())} test, {args.column}"
          + (f", program {args.program}" if args.program else ""))  # fmt: skip
    print(f"{'bank':>6} {'R2 k=64':>8} {'k scaled':>9} {'R2':>6}")
    for frac in args.fractions:
        n = max(DEFAULT_K, int(round(train.size * frac)))
        k_scaled = max(1, int(round(DEFAULT_K * n / train.size)))
        fixed, scaled = [], []
        for _ in range(1 if n >= train.size else args.repeats):
            bank = rng.choice(train, n, replace=False) if n < train.size else train
            for k, into in ((DEFAULT_K, fixed), (k_scaled, scaled)):
                pred = knn_regress(emb[test], emb[bank], z[bank], k)
                into.append(redshift_metrics(z[test], pred).r2)
        print(f"{n:>6} {np.mean(fixed):>8.3f} {k_scaled:>9} {np.mean(scaled):>6.3f}")
        out[f"bank_{n}"] = {"r2_k64": round(float(np.mean(fixed)), 4), "k_scaled": k_scaled,
                            "r2_k_scaled": round(float(np.mean(scaled)), 4)}  # fmt: skip
    for k in args.ks:
        m = redshift_metrics(z[test], knn_regress(emb[test], emb[train], z[train], k))
        print(f"full bank, k={k:<3} R2 {m.r2:.3f}  sigma_NMAD {m.sigma_nmad:.4f}  "
              f"outliers {m.outlier_fraction:.3f}")  # fmt: skip
        out[f"k_{k}"] = {"r2": round(m.r2, 4), "sigma_nmad": round(m.sigma_nmad, 4),
                         "outlier_fraction": round(m.outlier_fraction, 4)}  # fmt: skip
    truth = truth_path(layout.samplesky_dir(), args.release)
    if fsio.exists(str(truth)):
        out["by_tracer"] = _by_tracer(table, str(truth), emb, train, test, z)
    if args.recall_n:
        out["recall_at_10"] = _recall(table, test, args.recall_n, args.repeats, rng)
    print(json.dumps(out))
    return 0


def _program(layout: StorageLayout, release: str, table) -> np.ndarray:
    """(N,) DESI program of each embeddings row, from the release's pairs table."""
    pairs = read_pairs_columns(layout.pairs_dir(release), ["targetid", "program"])
    ids, programs = pairs.column("targetid").to_pylist(), pairs.column("program").to_pylist()
    program_of = dict(zip(ids, programs, strict=True))
    return np.array([program_of.get(t) for t in table.column("targetid").to_pylist()], dtype=object)


def _by_tracer(table, truth_url: str, emb, train, test, z) -> dict[str, dict]:
    """Per-tracer k = 64 figures of the test split (tracers from the sample sky's truth)."""
    tracer = truth_tracers(truth_url, table.column("targetid").to_pylist())
    query = np.flatnonzero(test)
    pred = knn_regress(emb[query], emb[train], z[train], DEFAULT_K)
    nn = nearest_neighbours(emb[query], emb[train], DEFAULT_K)  # (Q, 64) rows of train
    sq = (pred - z[query]) ** 2
    out = {}
    print(f"{'tracer':>6} {'n':>4} {'bank':>5} {'R2':>6} {'s_NMAD':>7} {'outl':>6} "
          f"{'SSE share':>9} {'nbr z std':>9} {'same':>5}")  # fmt: skip
    for name in ("BGS", "LRG", "ELG"):
        rows = tracer[query] == name
        if rows.sum() < 2:
            continue
        m = redshift_metrics(z[query][rows], pred[rows])
        spread = float(np.median(z[train][nn.index[rows]].std(axis=1)))
        same = float((tracer[train][nn.index[rows]] == name).mean())
        share = float(sq[rows].sum() / sq.sum())
        bank = int((tracer[train] == name).sum())
        print(f"{name:>6} {rows.sum():>4} {bank:>5} {m.r2:>6.3f} {m.sigma_nmad:>7.4f} "
              f"{m.outlier_fraction:>6.3f} {share:>9.2f} {spread:>9.3f} {same:>5.2f}")  # fmt: skip
        out[name] = {"n": int(rows.sum()), "bank": bank, "r2": round(m.r2, 4),
                     "sigma_nmad": round(m.sigma_nmad, 4),
                     "outlier_fraction": round(m.outlier_fraction, 4),
                     "sse_share": round(share, 3), "neighbour_z_std": round(spread, 4),
                     "same_tracer_neighbours": round(same, 3)}  # fmt: skip
    return out


def _recall(table, test, n: int, repeats: int, rng) -> float:
    """Mean image->spectrum recall@10 over ``repeats`` random test subsets of ``n`` pairs."""
    image = l2_normalise(embedding_matrix(table, "image_embedding"), "image_embedding")
    spectrum = l2_normalise(embedding_matrix(table, "spectrum_embedding"), "spectrum_embedding")
    rows = np.flatnonzero(test)
    draws = (
        [rows] if n >= rows.size else [rng.choice(rows, n, replace=False) for _ in range(repeats)]
    )
    recall = float(np.mean([retrieval_metrics(image[d], spectrum[d]).recall_at_10 for d in draws]))
    print(f"image->spectrum recall@10 over {min(n, rows.size)} test pairs "
          f"({len(draws)} draws): {recall:.3f}")  # fmt: skip
    return round(recall, 4)


if __name__ == "__main__":
    sys.exit(main())
