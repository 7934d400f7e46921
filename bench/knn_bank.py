"""How much of a k-NN redshift R² is the bank's size, not the embedding?

The paper's k = 64 was chosen for a bank of ~160k train galaxies (k / N ~ 0.04%); over the
default sky's ~2.4k train spectra, 64 neighbours are 2.7% of the bank and span a wide range of
redshift wherever the bank is sparse (ELGs above z 1.3, the ends of each tracer's n(z)). This
reads a finished run's embeddings table and prints, for random sub-banks of the train split
(fractions ``--fractions``, ``--repeats`` draws each), the test split's R² with k = 64 and with
k scaled with the bank (k / N held at 64 / N_full), plus R² against k on the full bank::

    .venv/bin/python bench/knn_bank.py --storage /tmp/x/storage [--model tiny-v1]

If R² at k = 64 falls as the bank shrinks while R² at a constant k / N stays flat, the k = 64
figure is limited by the bank's size. Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astroclip_core import fsio  # noqa: E402
from astroclip_core.evaluation.knn import DEFAULT_K, knn_regress, l2_normalise  # noqa: E402
from astroclip_core.evaluation.metrics import redshift_metrics  # noqa: E402
from astroclip_core.storage import StorageLayout  # noqa: E402
from astroclip_core.tables.embeddings import embedding_matrix, read_embeddings  # noqa: E402


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
    args = parser.parse_args()
    layout = StorageLayout(args.storage)
    name = args.model or json.loads(fsio.read_bytes(layout.current_model(args.release)))["model"]
    table = read_embeddings(layout.embeddings_dir(args.release, name), ["split", "z", args.column])
    split = np.asarray(table.column("split").to_pylist(), dtype=object)
    z = table.column("z").to_numpy(zero_copy_only=False).astype(np.float64)
    emb = l2_normalise(embedding_matrix(table, args.column), args.column)  # (N, D)
    train = np.flatnonzero((split == "train") & np.isfinite(z))
    test = (split == "test") & np.isfinite(z)
    rng = np.random.default_rng(0)
    out: dict[str, object] = {"model": name, "n_train": int(train.size), "n_test": int(test.sum())}
    print(f"{name}: {train.size} train, {int(test.sum())} test, {args.column}")
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
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
