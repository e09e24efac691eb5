"""``edge evaluate``: metrics on a folder-per-class tree, and the golden-file regression guard
(``--write-golden`` records, ``--golden`` checks: :mod:`indvision.edge.golden`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from indvision import atomic
from indvision.edge.cli_common import add_bundle_command, add_progress, load_classifier
from indvision.edge.evaluate import evaluate_tree, predict_tree
from indvision.edge.golden import compare_golden, golden_record, golden_summary, read_golden
from indvision.edge.progress import Progress
from indvision.errors import IndvisionError


def add(commands: Any) -> None:
    """The ``evaluate`` subcommand."""
    evaluate = add_bundle_command(commands, "evaluate", "metrics on a folder-per-class tree")
    evaluate.add_argument("data_dir", metavar="DATA_DIR")
    add_progress(evaluate)
    evaluate.add_argument("--group-regex", help="fuse views per group (default: the bundle's)")
    evaluate.add_argument("--write-golden", metavar="FILE",
                          help="save per-image labels and scores and the metric floors "
                               "(accuracy, each class's recall) as a golden record")
    evaluate.add_argument("--floor-margin", type=float, default=0.0, metavar="FRACTION",
                          help="with --write-golden: floors = measured minus this (default 0.0; "
                               "0.02 = 2 points)")
    evaluate.add_argument("--golden", metavar="FILE",
                          help="check against a golden record; exit 1 on a floor not met or "
                               "too many changed labels")
    evaluate.add_argument("--max-changed", type=int, default=0, metavar="N",
                          help="images allowed to change label against --golden (default 0)")
    evaluate.add_argument("--golden-tolerance", type=float, default=None, metavar="DIFF",
                          help="also fail when a score moved by more than DIFF against --golden "
                               "(default: 1e-4 for the golden's own model file, else unchecked)")
    evaluate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``evaluate``: the report on stdout; exit 1 on skipped images or a failed golden check."""
    classifier = load_classifier(args)
    if args.max_changed < 0:
        raise IndvisionError(f"--max-changed must be >= 0, got {args.max_changed}")
    if not 0.0 <= args.floor_margin < 1.0:
        raise IndvisionError(f"--floor-margin must be a fraction in [0, 1), got "
                             f"{args.floor_margin}")
    golden = read_golden(args.golden) if args.golden else None  # fail before the work
    found = predict_tree(classifier, Path(args.data_dir), progress=None if args.no_progress
                         else lambda total: Progress(total, interval=args.progress_every))
    report = evaluate_tree(classifier, Path(args.data_dir), args.group_regex, found)
    if golden is not None:
        report["golden"] = {"file": str(args.golden),
                            **compare_golden(classifier, found, golden, report,
                                             args.max_changed, args.golden_tolerance)}
    if args.write_golden:
        atomic.write_json(args.write_golden,
                          golden_record(classifier, found, args.floor_margin))
    print(json.dumps(report, indent=2), flush=True)
    status = 0
    if report["skipped"]:
        print(f"error: {len(report['skipped'])} images could not be read and were left out "
              "(see 'skipped')", file=sys.stderr)
        status = 1
    if golden is not None and not report["golden"]["passed"]:
        print(golden_summary(args.golden, report["golden"]), file=sys.stderr, flush=True)
        status = 1
    return status
