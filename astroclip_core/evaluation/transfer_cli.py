"""The ``astroclip transfer-check`` command: options, checks before any work, and the run.

Parsing imports nothing heavy; the work is :mod:`astroclip_core.evaluation.transfer`'s.
"""

from __future__ import annotations

import argparse
import json

from astroclip_core import fsio

DEFAULT_Z_FIBER_MAG = 21.0  # the library's default (evaluation.transfer), for --help


def add_transfer_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``astroclip transfer-check`` options to ``parser``."""
    from astroclip_core.cli import int_in_range

    parser.add_argument(
        "--model",
        required=True,
        help="model folder, Hugging Face Hub repo id, or a model name of --release under the "
        "data root",
    )
    parser.add_argument("--release", default="edr", help="release of the bank (default: edr)")
    parser.add_argument(
        "--embeddings",
        default=None,
        help="embeddings table (file or hive folder) whose train split is the k-NN bank "
        "(default: the data root's embeddings of --release and the model's name)",
    )
    parser.add_argument("--z-min", type=float, default=0.3, help="lowest redshift (0.3)")
    parser.add_argument("--z-max", type=float, default=1.0, help="highest redshift (1.0)")
    parser.add_argument("--n-z", type=int_in_range(1, 1000), default=15,
                        help="redshifts, evenly spaced (15)")  # fmt: skip
    parser.add_argument("--n-draws", type=int_in_range(1, 10_000), default=8,
                        help="noise draws per redshift (8)")  # fmt: skip
    parser.add_argument(
        "--z-fiber-mag",
        type=float,
        default=DEFAULT_Z_FIBER_MAG,
        help=f"AB magnitude of the spectrum over 8300-9000 A observed (default "
        f"{DEFAULT_Z_FIBER_MAG}; DESI LRGs have z_fiber < 21.6)",
    )
    parser.add_argument(
        "--magnitude-mode",
        choices=("fixed", "luminosity"),
        default="fixed",
        help="fixed: --z-fiber-mag at every z; luminosity: --z-fiber-mag at z 0.7, one "
        "galaxy's luminosity elsewhere (luminosity distance, template k-correction)",
    )
    parser.add_argument("--k", type=int_in_range(1, 100_000), default=64, help="k-NN k (64)")
    parser.add_argument("--seed", type=int_in_range(0, 2**32 - 1), default=0)
    parser.add_argument("--out", default=None, help="write the flat figures as JSON here")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _check_args(args: argparse.Namespace) -> None:
    from astroclip_core.cli import UsageError

    if not 0 <= args.z_min <= args.z_max < 10:
        raise UsageError(f"--z-min {args.z_min} / --z-max {args.z_max}: need 0 <= min <= max < 10")
    if not 10 <= args.z_fiber_mag <= 30:
        raise UsageError(f"--z-fiber-mag {args.z_fiber_mag} is not an AB magnitude in 10..30")
    if args.out is not None and not args.out.endswith(".json"):
        raise UsageError(f"--out {args.out!r} must be a .json file")
    if args.embeddings is not None and not fsio.exists(args.embeddings):
        raise UsageError(f"--embeddings {args.embeddings}: no such file or folder")


def transfer_command(args: argparse.Namespace) -> int:
    """Run ``astroclip transfer-check``: print the per-redshift table, optionally write JSON."""
    import numpy as np

    from astroclip_core.embed_cli import resolve_model_source
    from astroclip_core.evaluation.transfer import TransferConfig, train_bank, transfer_check
    from astroclip_core.model.pretrained import load_pretrained, model_label
    from astroclip_core.storage import default_layout
    from astroclip_core.tables.embeddings import read_embeddings

    _check_args(args)
    config = TransferConfig(
        redshifts=tuple(
            float(z) for z in np.round(np.linspace(args.z_min, args.z_max, args.n_z), 4)
        ),
        n_draws=args.n_draws,
        z_fiber_mag=args.z_fiber_mag,
        magnitude_mode=args.magnitude_mode,
        seed=args.seed,
        k=args.k,
    )
    source = resolve_model_source(args.model, args.release)
    model = load_pretrained(source, device=args.device)
    bank_url = args.embeddings or default_layout().embeddings_dir(args.release, model_label(source))
    bank_emb, bank_z = train_bank(read_embeddings(bank_url, ["split", "z", "spectrum_embedding"]))
    result = transfer_check(model, bank_emb, bank_z, config, device=args.device)
    print(f"model {model_label(source)}, bank {bank_url}")
    for line in result.table_lines():
        print(line)
    if args.out:
        flat = result.to_flat_dict()
        flat["transfer.lrg_stack.model"] = model_label(source)
        fsio.atomic_write_bytes(args.out, json.dumps(flat, indent=1, sort_keys=True).encode())
        print(f"wrote {args.out}")
    return 0
