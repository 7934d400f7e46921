"""The ``astroclip`` command.

Each subcommand is a ``register(subparsers)`` function that adds its parser and sets
``func`` (``args -> exit code``). The library's own subcommands are registered here; other
packages (the Dagster code) contribute theirs through the ``astroclip.commands`` entry-point
group, so this module never imports Dagster.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib.metadata import entry_points
from pathlib import Path
from typing import NoReturn

ENTRY_POINT_GROUP = "astroclip.commands"


def _sample_sky_generate(args: argparse.Namespace) -> int:
    from astroclip_core.samplesky.config import preset
    from astroclip_core.samplesky.generate import generate

    cfg = preset(
        args.size, seed=args.seed, galaxies_per_pixel=args.galaxies_per_pixel, scale=args.scale
    )
    names = [fp.name for fp in cfg.releases]
    if args.release != "all" and args.release not in names:
        raise UsageError(
            f"--release {args.release!r}: the {args.size!r} sample sky has releases "
            f"{', '.join(names)} (or all)"
        )
    releases = None if args.release == "all" else [args.release]
    summary = generate(_sky_root(args), cfg, releases)
    print(json.dumps(asdict(summary), indent=1))
    return 0


def _sample_sky_serve(args: argparse.Namespace) -> int:
    from astroclip_core.samplesky.server import serve_sample_sky

    root = _sky_root(args)
    with serve_sample_sky(root, port=args.port) as server:
        print(f"sample sky under {root}")
        print(f"  DESI root:            {server.desi_root_url}")
        print(f"  Legacy Surveys root:  {server.legacysurvey_root_url}")
        print(f"  cutout service:       {server.cutout_url}")
        print("Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopped")
    return 0


def _sample_sky_preview(args: argparse.Namespace) -> int:
    from astroclip_core.samplesky.preview import write_preview

    out = write_preview(_sky_root(args), args.release, args.out, n=args.n)
    print(out)
    return 0


def _sky_root(args: argparse.Namespace) -> Path:
    """``--root``, else ``<data root>/samplesky`` (the data root from ``$ASTROCLIP_STORAGE``)."""
    from astroclip_core.samplesky.config import default_root

    return args.root if args.root is not None else default_root()


def register_sample_sky(subparsers: argparse._SubParsersAction) -> None:
    """``astroclip sample-sky generate|serve|preview``."""
    from astroclip_core.samplesky.config import SIZE_PRESETS

    p = subparsers.add_parser("sample-sky", help="generate, serve or preview the synthetic survey")
    sub = p.add_subparsers(dest="action", required=True)
    root_help = (
        "sample-sky folder (default: <data root>/samplesky; the data root is $ASTROCLIP_STORAGE "
        "or storage/)"
    )
    release_names = sorted({fp.name for cfg in SIZE_PRESETS.values() for fp in cfg.releases})

    gen = sub.add_parser(
        "generate", help="write the DESI and Legacy Surveys files of the sample sky"
    )
    gen.add_argument("--root", type=Path, default=None, help=root_help)
    gen.add_argument(
        "--release",
        default="all",
        help=f"release to write: one of the size preset's ({', '.join(release_names)}) or all",
    )
    gen.add_argument(
        "--seed",
        type=int_in_range(0, MAX_SEED),
        default=None,
        help="random seed (default: the preset's)",
    )
    gen.add_argument("--size", default="default", choices=sorted(SIZE_PRESETS), help="size preset")
    gen.add_argument(
        "--galaxies-per-pixel",
        type=int_in_range(1, 10**7),
        default=None,
        help="target pool per nside-16 pixel",
    )
    gen.add_argument(
        "--scale",
        type=int_in_range(1, 1024),
        default=1,
        help="cover N times the preset's nside-16 pixels per release, adding neighbours "
        "(default: 1, the preset as it is)",
    )
    gen.set_defaults(func=_sample_sky_generate)

    serve = sub.add_parser("serve", help="serve the sample sky on 127.0.0.1 until Ctrl-C")
    serve.add_argument("--root", type=Path, default=None, help=root_help)
    serve.add_argument(
        "--port", type=int_in_range(0, MAX_PORT), default=0, help="port (default: any free port)"
    )
    serve.set_defaults(func=_sample_sky_serve)

    prev = sub.add_parser("preview", help="PNG of cutouts beside spectra")
    prev.add_argument("--root", type=Path, default=None, help=root_help)
    prev.add_argument("--release", default="edr", help="release to show (default: edr)")
    prev.add_argument("--out", type=Path, default=Path("samplesky-preview.png"), help="output PNG")
    prev.add_argument("--n", type=int_in_range(1, 10_000), default=16, help="number of galaxies")
    prev.set_defaults(func=_sample_sky_preview)


def register_search(subparsers: argparse._SubParsersAction) -> None:
    """Add ``astroclip search`` (nearest neighbours in the embedding tables)."""
    from astroclip_core.search import add_search_arguments, search_command

    p = subparsers.add_parser(
        "search",
        help="nearest neighbours of a galaxy in the embedding tables",
        description="Find the k nearest neighbours of a TARGETID within one modality or across "
        "modalities (image query -> spectrum bank and the reverse); print them as a table and "
        "optionally write a PNG.",
    )
    add_search_arguments(p)
    p.set_defaults(func=search_command)


def register_embed(subparsers: argparse._SubParsersAction) -> None:
    """Add ``astroclip embed`` (embeddings of coadd files, cutout files and positions)."""
    from astroclip_core.embed_cli import add_embed_arguments, embed_command

    p = subparsers.add_parser(
        "embed",
        help="embed objects the pipeline has never seen (coadds, cutouts, RA/Dec)",
        description="Embed the targets of DESI coadd files, Legacy Surveys cutout files and "
        "the positions of a RA/Dec table (their cutouts and DESI spectra fetched and cached) "
        "with a trained model; write the embeddings table with a source column.",
    )
    add_embed_arguments(p)
    p.set_defaults(func=embed_command)


def register_transfer_check(subparsers: argparse._SubParsersAction) -> None:
    """Add ``astroclip transfer-check`` (redshifts of a real LRG spectrum from the bank)."""
    from astroclip_core.evaluation.transfer_cli import add_transfer_arguments, transfer_command

    p = subparsers.add_parser(
        "transfer-check",
        help="k-NN redshifts of the real DESI LRG stack, redshifted with real noise",
        description="Redshift the real DESI LRG stack onto the coadd grid at z = z-min..z-max, "
        "scale it to an LRG fibre magnitude, add noise from real coadd ivar, embed it with the "
        "model's spectrum encoder and predict z by k-NN against the train split's spectrum "
        "embeddings; print sigma_NMAD, outliers and bias per redshift.",
    )
    add_transfer_arguments(p)
    p.set_defaults(func=transfer_command)


def register_presets(subparsers: argparse._SubParsersAction) -> None:
    """Add ``astroclip presets`` (the model presets and their parameter counts)."""
    p = subparsers.add_parser("presets", help="list the model presets with parameter counts")
    p.set_defaults(func=_presets)


def _presets(args: argparse.Namespace) -> int:
    from astroclip_core.model.config import describe_presets

    print(describe_presets())
    return 0


BUILTIN_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    register_sample_sky,
    register_search,
    register_embed,
    register_transfer_check,
    register_presets,
)


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers in ``[low, high]``; the error names the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


MAX_SEED = 2**32 - 1  # numpy's SeedSequence-compatible range for a single integer seed
MAX_PORT = 65535


class UsageError(Exception):
    """A command-line value is not usable; the message names the option, the value and why."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see <prog> --help)`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def error_line(err: BaseException) -> str:
    """One line for a failure: its message, with the type where the message alone says little.

    An error that wraps a step's error (Dagster's ``user_exception``) is unwrapped to it; an
    error raised ``from`` another keeps its own message, which is the one that names the value.
    """
    while isinstance(getattr(err, "user_exception", None), BaseException):
        err = err.user_exception
    message = " ".join(str(err).split())
    if isinstance(err, OSError | KeyError | TypeError | AttributeError) or not message:
        message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return message


def build_parser() -> argparse.ArgumentParser:
    """The ``astroclip`` parser with every built-in and entry-point subcommand."""
    parser = OneLineParser(
        prog="astroclip",
        description="AstroCLIP-style pipeline for DESI spectra and Legacy Surveys images.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of one-line errors"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in BUILTIN_COMMANDS:
        register(subparsers)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``astroclip`` command; return its exit code.

    Exit status 2 for a usage error (a bad option value, found before any work starts), 1 for a
    failure; either prints one line naming the value or file and the problem. ``--debug``
    shows the full traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as err:
        if args.debug:
            raise
        parser.exit(2, f"astroclip {args.command}: error: {err}\n")
    except KeyboardInterrupt:
        print("astroclip: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(
            f"astroclip {args.command}: error: {error_line(err)} (--debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
