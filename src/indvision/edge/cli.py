"""``python -m indvision.edge``: the edge command line, its parser and its dispatch.

Each command group lives in its own module (``cli_predict``, ``cli_evaluate``, ``cli_watch``,
``cli_serve``, ``cli_bundle``; shared options in ``cli_common``) and sets ``run`` on its
parser; :func:`main` calls it and turns every expected failure into one ``error: ...`` line
and exit code 1, never a traceback. ``--help`` on each command is the reference; what the
commands do on a device is in docs/edge.md and docs/serving.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from indvision.edge import cli_bundle, cli_evaluate, cli_predict, cli_serve, cli_watch
from indvision.errors import IndvisionError

DESCRIPTION = ("Run an exported bundle with numpy, OpenCV and onnxruntime only (no "
               "TensorFlow). BUNDLE is a bundle folder, a run folder (its bundle/), or "
               "exports/<pipeline> (the bundle its latest.json points at: the newest run that "
               "passed every gate).")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m indvision.edge`` parser, one subcommand per command."""
    parser = argparse.ArgumentParser(prog="python -m indvision.edge", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (cli_predict, cli_evaluate, cli_bundle, cli_serve, cli_watch):
        group.add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, like grep
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except IndvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
