"""Transfer to a real spectrum: k-NN redshifts of the real DESI LRG stack (redshifted, real
noise) from a model trained on the sample sky, beside the model's sample-sky figures.

Check the model of a finished ``astroclip run`` (its current model, or ``--model``)::

    .venv/bin/python bench/transfer_lrg.py --storage /tmp/x/storage

Train a variant with training options on the same run's pairs (a full training: minutes on
two cores), embed every partition, evaluate it, and check it::

    .venv/bin/python bench/transfer_lrg.py --storage /tmp/x/storage \\
        --train tiny-aug --augment spectrum_sky_residual_scale=1.0 spectrum_mask_runs=3

The variant becomes the release's current model (``current.json``) in that data root.
``--tilts -1 0 1`` repeats each setup with the stack times (lambda_rest / 5000 A)^index: a
model that reads redshift from the features' positions gives the same predictions for each.
Prints the per-redshift table of each ``--setups`` entry and one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astroclip_core import fsio  # noqa: E402
from astroclip_core.evaluation.transfer import (  # noqa: E402
    TransferConfig,
    read_rest_template,
    tilted_template,
    transfer_check_release,
)
from astroclip_core.storage import StorageLayout  # noqa: E402
from astroclip_core.training.augment import AugmentConfig  # noqa: E402

SAMPLE_SKY_KEYS = (
    "redshift.spectrum.r2", "redshift.spectrum.sigma_nmad", "redshift.spectrum.outlier_fraction",
    "redshift.image.r2", "redshift.image.sigma_nmad", "redshift.image.outlier_fraction",
    "retrieval.image_to_spectrum.recall_at_10", "retrieval.spectrum_to_image.recall_at_10",
)  # fmt: skip


def _augment(pairs: list[str]) -> AugmentConfig:
    """AugmentConfig with ``name=value`` overrides (values as :func:`_value` reads them)."""
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--augment {pair!r}: expected name=value")
        values[name] = _value(value)
    return replace(AugmentConfig(), **values)


def _value(text: str):
    """A JSON number/bool/list, or else the text itself (``pixel_weight=ivar``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _model(overrides: list[str]):
    """The tiny preset with ``part.name=value`` overrides (part: image, spectrum, head, loss,
    scan_view; a bare ``name`` is a spectrum field), or the preset's name when there are none."""
    from astroclip_core.model.config import get_preset

    if not overrides:
        return "tiny"
    model = get_preset("tiny").model
    for pair in overrides:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--spectrum/--model-option {pair!r}: expected name=value")
        part, _, name = key.rpartition(".")
        part = part or "spectrum"
        value = _value(value)
        if isinstance(value, list):
            value = tuple(value)
        model = replace(model, **{part: replace(getattr(model, part), **{name: value})})
    return model


def train_variant(
    layout: StorageLayout,
    release: str,
    name: str,
    augment: AugmentConfig,
    steps: int | None,
    spectrum: list[str],
    seed: int = 0,
    batch_size: int | None = None,
) -> None:
    """Train ``name`` with ``augment`` on the release's pairs (TrainConfig's other defaults),
    embed every partition with it and write its evaluation report."""
    from astroclip_core.evaluation.steps import evaluate_release
    from astroclip_core.samplesky.service import truth_path
    from astroclip_core.tables.pairs import list_pairs_files
    from astroclip_core.training.config import TrainConfig
    from astroclip_core.training.steps import embed_partition, train_release

    config = TrainConfig(
        out_dir=layout.model_dir(release, name), pairs_dir=layout.pairs_dir(release),
        augment=augment, model=_model(spectrum), seed=seed, **({"steps": steps} if steps else {}),
        **({"batch_size": batch_size} if batch_size else {}),
    )  # fmt: skip
    start = time.perf_counter()
    train_release(layout, release, name, config)
    print(
        f"trained {name} in {time.perf_counter() - start:.0f} s ({augment}; {spectrum})", flush=True
    )
    for pixel, _url in list_pairs_files(layout.pairs_dir(release)):
        embed_partition(layout, release, pixel)
    truth = truth_path(layout.samplesky_dir(), release)
    evaluate_release(layout, release, name, truth_url=str(truth) if truth.exists() else None)


def main() -> int:
    """Parse the options, optionally train a variant, then check the model and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", required=True, help="data root of a finished astroclip run")
    parser.add_argument("--release", default="edr")
    parser.add_argument("--model", default=None, help="model name (default: the current one)")
    parser.add_argument("--train", default=None, metavar="NAME", help="train this variant first")
    parser.add_argument("--augment", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--spectrum", nargs="*", default=[], metavar="[PART.]NAME=VALUE",
                        help="overrides of the tiny preset: spectrum fields by bare name, or "
                        "image./head./loss./scan_view. fields; values as JSON or text")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="default: TrainConfig's")
    parser.add_argument("--seed", type=int, default=0, help="training seed of --train")
    parser.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's")
    parser.add_argument(
        "--setups",
        nargs="+",
        default=["fixed:21.0", "fixed:21.6", "luminosity:21.0"],
        help="magnitude_mode:z_fiber_mag pairs (luminosity: z_fiber_mag at z = 0.7)",
    )
    parser.add_argument("--n-draws", type=int, default=8)
    parser.add_argument(
        "--tilts", nargs="+", type=float, default=[0.0], metavar="INDEX",
        help="also check the stack times (lambda_rest / 5000 A)^INDEX: how far the predictions "
        "follow the continuum slope",
    )  # fmt: skip
    args = parser.parse_args()
    layout = StorageLayout(args.storage)
    if args.train:
        train_variant(
            layout,
            args.release,
            args.train,
            _augment(args.augment),
            args.steps,
            args.spectrum,
            args.seed,
            args.batch_size,
        )
    name = args.model or args.train
    if name is None:
        name = json.loads(fsio.read_bytes(layout.current_model(args.release)))["model"]
    figures: dict[str, object] = {"model": name}
    report = f"{layout.report_dir(args.release, name)}/evaluation.json"
    if fsio.exists(report):
        flat = json.loads(fsio.read_bytes(report))
        figures.update({k: flat.get(k) for k in SAMPLE_SKY_KEYS})
    stack = read_rest_template()
    for setup, tilt in ((s, t) for t in args.tilts for s in args.setups):
        mode, _, mag = setup.partition(":")
        config = TransferConfig(n_draws=args.n_draws, z_fiber_mag=float(mag), magnitude_mode=mode)
        template = tilted_template(stack, tilt) if tilt else stack
        result = transfer_check_release(layout, args.release, name, config, template)
        label = f"{setup}" + (f",tilt={tilt:g}" if tilt else "")
        print(f"\n{name}, {label}:")
        print("\n".join(result.table_lines()))
        m = result.metrics
        figures[f"transfer@{label}"] = {
            "sigma_nmad": round(m.sigma_nmad, 4), "outlier_fraction": round(m.outlier_fraction, 4),
            "bias": round(m.bias, 4), "median_pred": [round(r.median_pred, 3) for r in result.per_z],
        }  # fmt: skip
    print("\n" + json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
