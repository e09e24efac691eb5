"""Command line: ``python -m indvision.synth KIND OUT_DIR [--seed N] [--per-class N]``.

Bad arguments print one line ``error: ...`` (with a did-you-mean for a mistyped kind) and
exit with status 2; a problem while writing prints ``error: ...`` with its own exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from indvision.errors import IndvisionError
from indvision.synth.kinds import KINDS, check_kind


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the project's one line, not usage + message."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> _Parser:
    ap = _Parser(
        prog="python -m indvision.synth",
        description="Generate a deterministic synthetic image set.",
    )
    ap.add_argument("kind", metavar="KIND", help=f"one of: {', '.join(sorted(KINDS))}")
    ap.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=150)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the set named on the command line, print its folder; return the exit code."""
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        check_kind(args.kind)
    except ValueError as exc:
        ap.error(str(exc))
    if args.per_class < 1:
        ap.error(f"--per-class must be >= 1, got {args.per_class}")
    from indvision.synth.files import generate  # cv2/numpy only once the arguments are good

    try:
        out = generate(args.kind, args.out_dir, seed=args.seed, per_class=args.per_class)
    except IndvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(out)
    return 0
