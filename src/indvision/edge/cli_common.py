"""What the edge commands share: the bundle options every model-running command takes, the
option groups several take (objects, progress, heatmaps, collect) and their use.

Each command module (``cli_predict``, ``cli_evaluate``, ``cli_watch``, ``cli_serve``,
``cli_bundle``) adds its parser with these and :mod:`indvision.edge.cli` dispatches to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from indvision import formats, signing
from indvision.edge.collect import WHEN_FULL, CollectConfig, Collector
from indvision.edge.objects import check_regex
from indvision.edge.runtime import EdgeClassifier
from indvision.errors import IndvisionError

BUNDLE_HELP = "bundle folder, run folder, or exports/<pipeline>"


def add_bundle_command(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand that runs a bundle's model: BUNDLE and the options choosing and checking
    the model file."""
    sub = commands.add_parser(name, help=help_text)
    sub.add_argument("bundle", help=BUNDLE_HELP)
    sub.add_argument("--model", help="model file in the bundle (default: model.json's)")
    sub.add_argument("--no-spin-wait", action="store_true",
                     help="idle onnxruntime threads sleep: faster where other work "
                          "shares the CPU, slower on a dedicated one")
    sub.add_argument("--allow-unshippable", action="store_true",
                     help="run a file verify marked not shippable")
    sub.add_argument("--runtime", choices=formats.RUNTIMES, default=None,
                     help="runtime for the model file (default: its format's first; "
                          "model.onnx also runs on opencv)")
    sub.add_argument("--trust", nargs="+", metavar="KEY", default=None,
                     help="public key file(s): refuse a bundle no trusted key signed as "
                          "it is (default: INDVISION_TRUSTED_KEYS; none: signatures are "
                          "not checked)")
    sub.add_argument("--allow-rollback", action="store_true",
                     help="run the bundle latest.json points at even when it is older "
                          "than the signed one accepted before for its pipeline")
    return sub


def add_objects(sub: argparse.ArgumentParser) -> None:
    """--group-regex and --per-image (predict, watch)."""
    sub.add_argument("--group-regex", help="views of one object: the regex's first group on "
                                           "the file name (default: the bundle's)")
    sub.add_argument("--per-image", action="store_true",
                     help="one line per image even where a group rule applies")


def add_progress(sub: argparse.ArgumentParser) -> None:
    """--no-progress and --progress-every (predict, evaluate)."""
    sub.add_argument("--no-progress", action="store_true",
                     help="no progress on stderr (a bar on a terminal, else a count line "
                          "every --progress-every seconds of work)")
    sub.add_argument("--progress-every", type=float, default=10.0, metavar="S",
                     help="off a terminal: seconds between progress lines (default 10)")


def add_heatmaps(sub: argparse.ArgumentParser) -> None:
    """--heatmaps (predict, watch)."""
    sub.add_argument("--heatmaps", metavar="DIR",
                     help="write each image's map on the image as the model saw it, "
                          "<name>.heatmap.png in DIR (frames: frame_<n>.heatmap.png): a "
                          "classifier's class-activation map of the decided class, an anomaly "
                          "model's anomaly map; colour scale fixed to 0-1 on every frame; "
                          "per image (with a group rule: --per-image)")


def add_collect(sub: argparse.ArgumentParser) -> None:
    """--collect and its bounds (predict, watch): see indvision.edge.collect."""
    defaults = CollectConfig()
    sub.add_argument("--collect", metavar="DIR",
                     help="keep the images worth a person's look in DIR/<label>/ with "
                          "DIR/collected.csv (uncertain ones, a sample of confident ones)")
    sub.add_argument("--collect-margin", type=float, default=defaults.margin, metavar="M",
                     help=f"uncertain: top-1 minus top-2 below M (default {defaults.margin})")
    sub.add_argument("--collect-band", type=float, default=defaults.band, metavar="B",
                     help="uncertain: P(good) within B of the bundle's threshold "
                          f"(default {defaults.band})")
    sub.add_argument("--collect-rejected", action="store_true",
                     help="keep every defect call too")
    sub.add_argument("--collect-sample", type=float, default=defaults.sample, metavar="F",
                     help="fraction of confident calls kept at random "
                          f"(default {defaults.sample})")
    sub.add_argument("--collect-max-images", type=int, default=defaults.max_images,
                     metavar="N", help=f"at most N images (default {defaults.max_images})")
    sub.add_argument("--collect-max-mb", type=float, default=defaults.max_bytes / 1e6,
                     metavar="MB", help="at most this many MB "
                                        f"(default {defaults.max_bytes / 1e6:.0f})")
    sub.add_argument("--collect-when-full", choices=WHEN_FULL, default=defaults.when_full,
                     help="drop the oldest collected images, or stop collecting")
    sub.add_argument("--collect-seed", type=int, default=None, help=argparse.SUPPRESS)


def load_classifier(args: argparse.Namespace) -> EdgeClassifier:
    """The bundle's classifier as the options ask, with its one-line warnings (unsigned,
    unverified) and the group rule checked."""
    classifier = EdgeClassifier(args.bundle, args.model,
                                allow_unshippable=args.allow_unshippable,
                                group_regex=getattr(args, "group_regex", None),
                                spin_wait=not args.no_spin_wait,
                                runtime=args.runtime, trusted_keys=args.trust,
                                allow_rollback=args.allow_rollback)
    signing.warn_if_unchecked(classifier.bundle, classifier.signed_by)
    if classifier.group_regex:
        check_regex(classifier.group_regex)
    warn_if_unverified(classifier)
    return classifier


def warn_if_unverified(classifier: EdgeClassifier) -> None:
    """One stderr line when the model file about to answer was never checked by verify."""
    if not classifier.verified:
        print(f"warning: {classifier.bundle.name}/{classifier.model_file} has not been "
              "verified against the Keras model (run the verify stage)", file=sys.stderr)


def emit_line(result: dict[str, Any]) -> None:
    """One result as one JSON line on stdout."""
    print(json.dumps(result), flush=True)


def collector_for(classifier: EdgeClassifier, args: argparse.Namespace) -> Collector | None:
    """The ``--collect`` folder's collector, or None without ``--collect``."""
    if not args.collect:
        return None
    config = CollectConfig(args.collect_margin, args.collect_band, args.collect_rejected,
                           args.collect_sample, args.collect_max_images,
                           int(args.collect_max_mb * 1e6), args.collect_when_full,
                           args.collect_seed)
    return Collector(args.collect, config, classifier.good_class, classifier.threshold,
                     (classifier.meta.get("provenance") or {}).get("run_id"))


def collecting(emit: Any, collector: Collector | None) -> Any:
    """``emit`` that also offers each result to ``collector``: an image line its file, an
    object line each of its views (with the object's decision). Stream frames come through
    ``watch``'s ``keep_frame``."""
    if collector is None:
        return emit

    def both(result: dict[str, Any]) -> None:
        emit(result)
        if "error" in result:
            return
        if "views" in result:
            for view in result["views"]:
                collector.offer(result, source=view)
        elif "path" in result:
            collector.offer(result, source=result["path"])

    return both


def heatmap_dir(classifier: EdgeClassifier, folder: str | None) -> Path | None:
    """The ``--heatmaps`` folder, created and checked writable before any work."""
    if folder is None:
        return None
    if not classifier.has_maps:
        raise IndvisionError(f"--heatmaps: {classifier.bundle} has no map output; export it "
                             "again with this version")
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IndvisionError(f"--heatmaps {path}: cannot create it ({exc.strerror or exc})"
                             ) from None
    if not os.access(path, os.W_OK):
        raise IndvisionError(f"--heatmaps {path}: not writable")
    return path
