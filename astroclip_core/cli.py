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

ENTRY_POINT_GROUP = "astroclip.commands"


def _sample_sky_generate(args: argparse.Namespace) -> int:
    from astroclip_core.samplesky.config import preset
    from astroclip_core.samplesky.generate import generate

    cfg = preset(args.size, seed=args.seed, galaxies_per_pixel=args.galaxies_per_pixel)
    releases = None if args.release == "all" else [args.release]
    summary = generate(args.root, cfg, releases)
    print(json.dumps(asdict(summary), indent=1))
    return 0


def _sample_sky_serve(args: argparse.Namespace) -> int:
    from astroclip_core.samplesky.server import serve_sample_sky

    with serve_sample_sky(args.root, port=args.port) as server:
        print(f"sample sky under {args.root}")
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

    out = write_preview(args.root, args.release, args.out, n=args.n)
    print(out)
    return 0


def register_sample_sky(subparsers: argparse._SubParsersAction) -> None:
    """``astroclip sample-sky generate|serve|preview``."""
    from astroclip_core.samplesky.config import DEFAULT_ROOT, SIZE_PRESETS

    p = subparsers.add_parser("sample-sky", help="generate, serve or preview the synthetic survey")
    sub = p.add_subparsers(dest="action", required=True)
    root_help = f"sample-sky folder (default: {DEFAULT_ROOT})"

    gen = sub.add_parser(
        "generate", help="write the DESI and Legacy Surveys files of the sample sky"
    )
    gen.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=root_help)
    gen.add_argument(
        "--release", default="all", choices=["edr", "dr1", "all"], help="release(s) to write"
    )
    gen.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's)")
    gen.add_argument("--size", default="default", choices=sorted(SIZE_PRESETS), help="size preset")
    gen.add_argument(
        "--galaxies-per-pixel", type=int, default=None, help="target pool per nside-16 pixel"
    )
    gen.set_defaults(func=_sample_sky_generate)

    serve = sub.add_parser("serve", help="serve the sample sky on 127.0.0.1 until Ctrl-C")
    serve.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=root_help)
    serve.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    serve.set_defaults(func=_sample_sky_serve)

    prev = sub.add_parser("preview", help="PNG of cutouts beside spectra")
    prev.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=root_help)
    prev.add_argument("--release", default="edr", choices=["edr", "dr1"], help="release to show")
    prev.add_argument("--out", type=Path, default=Path("samplesky-preview.png"), help="output PNG")
    prev.add_argument("--n", type=int, default=16, help="number of galaxies")
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
    register_presets,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``astroclip`` parser with every built-in and entry-point subcommand."""
    parser = argparse.ArgumentParser(
        prog="astroclip",
        description="AstroCLIP-style pipeline for DESI spectra and Legacy Surveys images.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in BUILTIN_COMMANDS:
        register(subparsers)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``astroclip`` command; return its exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
