"""The ``astroclip embed`` command: options, checks before any work, and the run.

Parsing imports nothing heavy (torch is imported when the command runs, not when the
``astroclip`` parser is built); the work is :mod:`astroclip_core.embed`'s.
"""

from __future__ import annotations

import argparse
import logging
import sys

from astroclip_core import fsio

SPECTRUM_MATCH_RADIUS_ARCSEC = 1.0  # the library's default (astroclip_core.embed), for --help


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``astroclip embed`` options to ``parser`` (an argparse parser)."""
    from astroclip_core.cli import int_in_range

    parser.add_argument(
        "--model",
        required=True,
        help="model folder (model.safetensors + config.json, or an old model.pt), a Hugging "
        "Face Hub repo id owner/name, or a model name of --release under the data root",
    )
    parser.add_argument("--coadd", nargs="+", action="extend", default=[], metavar="FILE",
                        help="DESI coadd FITS files: embed their targets' spectra")  # fmt: skip
    parser.add_argument("--targetids", nargs="+", action="extend", type=int, default=None,
                        metavar="ID", help="only these TARGETIDs of the --coadd files")  # fmt: skip
    parser.add_argument("--cutout", nargs="+", action="extend", default=[], metavar="FILE",
                        help="Legacy Surveys cutout FITS files (g,r,z, 0.262″/pixel)")  # fmt: skip
    parser.add_argument(
        "--radec",
        metavar="TABLE",
        help="CSV or Parquet table with ra, dec columns (deg): cutouts and, where DESI has a "
        f"target within {SPECTRUM_MATCH_RADIUS_ARCSEC:g}″, spectra are fetched and cached",
    )
    parser.add_argument("--out", required=True, help="output Parquet file (OUT.parquet)")
    parser.add_argument("--release", default="edr", help="DESI release for --radec and model names")
    parser.add_argument("--desi-root", default="", help="DESI public root for --radec "
                        "(default: the sample sky's)")  # fmt: skip
    parser.add_argument("--cutout-url", default="", help="fits-cutout service for --radec "
                        "(default: the sample sky's)")  # fmt: skip
    parser.add_argument("--sample-sky", default=None, help="sample-sky folder served for --radec "
                        "(default: <data root>/samplesky)")  # fmt: skip
    parser.add_argument("--batch-size", type=int_in_range(1, 100_000), default=64)
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def resolve_model_source(value: str, release: str) -> str:
    """``--model`` as given when it is a path or a Hub repo id, else the folder of the model
    of that name under the data root's ``models/<release>/``."""
    from astroclip_core.model.pretrained import is_hub_id
    from astroclip_core.storage import default_layout

    if fsio.exists(value) or is_hub_id(value):
        return value
    folder = default_layout().model_dir(release, value)
    if "/" not in value and fsio.exists(folder):
        return folder
    raise FileNotFoundError(
        f"--model {value!r} is neither a model folder or file, a Hub repo id (owner/name), nor "
        f"a model of release {release!r} ({folder} does not exist)"
    )


def _check_args(args: argparse.Namespace) -> None:
    from astroclip_core.cli import UsageError

    if not (args.coadd or args.cutout or args.radec):
        raise UsageError("nothing to embed: give --coadd, --cutout and/or --radec")
    if args.targetids is not None and not args.coadd:
        raise UsageError("--targetids selects targets of --coadd files; give --coadd")
    if not args.out.endswith(".parquet"):
        raise UsageError(f"--out {args.out!r} must be a .parquet file")
    for option, paths in (("--coadd", args.coadd), ("--cutout", args.cutout)):
        for path in paths:
            if not fsio.exists(path):
                raise UsageError(f"{option} {path}: no such file")
    if args.radec and not fsio.exists(args.radec):
        raise UsageError(f"--radec {args.radec}: no such file")


def _fetch_radec(args: argparse.Namespace):
    """The --radec objects, fetched through --desi-root/--cutout-url or the sample sky."""
    from contextlib import ExitStack

    from astroclip_core.cli import UsageError
    from astroclip_core.embed import objects_from_radec
    from astroclip_core.releases import discover_releases, find_release
    from astroclip_core.sources.desi import DesiSource
    from astroclip_core.sources.legacysurvey import LegacySurveySource
    from astroclip_core.storage import default_layout

    with ExitStack() as stack:
        desi_root, cutout_url = args.desi_root, args.cutout_url
        if not (desi_root and cutout_url):
            from astroclip_core.samplesky.server import serve_sample_sky
            from astroclip_core.samplesky.service import default_samplesky_root, is_published

            root = args.sample_sky or str(default_samplesky_root())
            if not is_published(root, args.release):
                raise UsageError(
                    f"--radec: the sample sky under {root} has no release {args.release!r}: "
                    f"run `astroclip sample-sky generate --release {args.release}`, or give "
                    "--desi-root and --cutout-url"
                )
            server = stack.enter_context(serve_sample_sky(root))
            desi_root = desi_root or server.desi_root_url
            cutout_url = cutout_url or server.cutout_url
        release = find_release(discover_releases(desi_root), args.release, desi_root)
        desi = DesiSource(release=release, root_url=desi_root)
        legacysurvey = LegacySurveySource(cutout_url=cutout_url)
        return objects_from_radec(args.radec, desi, legacysurvey, default_layout())


def embed_command(args: argparse.Namespace) -> int:
    """Run ``astroclip embed``: embed the given objects, write OUT.parquet, print a summary."""
    _check_args(args)
    # What was done to each input (arms merged or resampled, cutouts fetched) goes to stderr
    # while the command runs.
    notes = logging.getLogger("astroclip_core.embed")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = notes.level
    notes.addHandler(handler)
    notes.setLevel(logging.INFO)
    try:
        return _embed(args)
    finally:
        notes.removeHandler(handler)
        notes.setLevel(level)


def _embed(args: argparse.Namespace) -> int:
    from astroclip_core.embed import embed_files, summary_lines
    from astroclip_core.model.pretrained import load_pretrained, model_label
    from astroclip_core.tables.embeddings import write_object_embeddings

    source = resolve_model_source(args.model, args.release)
    model = load_pretrained(source, device=args.device)
    radec = _fetch_radec(args) if args.radec else None
    table = embed_files(
        model, model_label(source), args.coadd, args.targetids, args.cutout, radec,
        args.batch_size, args.device,
    )  # fmt: skip
    size = write_object_embeddings(args.out, table)
    for line in summary_lines(table):
        print(line)
    print(f"wrote {table.num_rows} rows ({size} bytes) to {args.out}")
    return 0
