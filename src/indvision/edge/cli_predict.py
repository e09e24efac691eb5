"""``edge predict``: one JSON line per image (per object with a group rule), locally or on
Ray Data with ``--ray`` (:mod:`indvision.edge.ray_predict`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from indvision import signing
from indvision.edge.cli_common import (
    add_bundle_command,
    add_collect,
    add_heatmaps,
    add_objects,
    add_progress,
    collecting,
    collector_for,
    emit_line,
    heatmap_dir,
    load_classifier,
)
from indvision.edge.progress import Progress
from indvision.edge.runtime import predict_files, predict_objects
from indvision.edge.sources import expand_sources
from indvision.errors import IndvisionError


def add(commands: Any) -> None:
    """The ``predict`` subcommand."""
    predict = add_bundle_command(commands, "predict", "one JSON line per image (per object "
                                                      "with a group rule)")
    add_progress(predict)
    add_collect(predict)
    predict.add_argument("paths", nargs="+", metavar="PATH",
                         help="image files, folders, list files (.txt/.lst, one path a line) "
                              "or CSVs with a 'path' column")
    add_heatmaps(predict)
    add_objects(predict)
    _add_ray(predict)
    predict.set_defaults(run=run)


def _add_ray(sub: argparse.ArgumentParser) -> None:
    """--ray and its sizing: see indvision.edge.ray_predict."""
    sub.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="score on Ray Data (pip install 'indvision[scale]'): no ADDRESS "
                          "starts a local Ray for the job; 'auto' or ray://host:port joins a "
                          "cluster (the bundle, images and --out on the same paths on every "
                          "node); needs --out")
    sub.add_argument("--out", metavar="FILE",
                     help="with --ray: results.parquet or results.jsonl, a folder of Ray's "
                          "part files, renamed into place when the job is done")
    sub.add_argument("--actors", type=int, default=None, metavar="N",
                     help="with --ray: actors, each one onnxruntime session (default: the "
                          "cluster's CPUs // --threads, so actors x threads <= CPUs)")
    sub.add_argument("--threads", type=int, default=1, metavar="T",
                     help="with --ray: onnxruntime intra-op threads per actor, also the CPUs "
                          "each actor reserves (default 1)")


def run(args: argparse.Namespace) -> int:
    """``predict``: on Ray with ``--ray``, else here; exit 1 when an image could not be read."""
    if args.ray is None and (args.out or args.actors is not None or args.threads != 1):
        raise IndvisionError("--out, --actors and --threads go with --ray")
    if args.ray is not None:
        return _run_on_ray(args)
    classifier = load_classifier(args)
    paths = list(expand_sources(args.paths))
    if not paths:
        raise IndvisionError(f"no image files in {' '.join(args.paths)}")
    if classifier.decision.group_by == "column" and not (classifier.group_regex
                                                          or args.per_image):
        print("warning: this bundle decides per object by a CSV group column, which file "
              "names cannot tell here: each image is decided alone; pass --group-regex to "
              "group views by name", file=sys.stderr)
    progress = None if args.no_progress else Progress(len(paths),
                                                      interval=args.progress_every)
    collector = collector_for(classifier, args)
    emit = collecting(emit_line, collector)
    heatmaps = heatmap_dir(classifier, args.heatmaps)
    if classifier.group_regex and not args.per_image:
        if heatmaps is not None:
            raise IndvisionError("--heatmaps works per image: add --per-image")
        failures = predict_objects(classifier, paths, emit, progress=progress)
    else:
        failures = predict_files(classifier, paths, emit, progress=progress, heatmaps=heatmaps)
    if progress is not None:
        progress.close()
    if collector is not None:
        collector.close()
    if failures:
        print(f"error: {failures} of {len(paths)} images could not be read "
              "(see their 'error' lines)", file=sys.stderr)
        return 1
    return 0


def _run_on_ray(args: argparse.Namespace) -> int:
    """``predict --ray``: the same rows as ``predict``, scored on Ray Data, written to --out."""
    from indvision.edge import ray_predict

    for flag, value in (("--collect", args.collect), ("--heatmaps", args.heatmaps),
                        ("--allow-rollback", args.allow_rollback)):
        if value:
            raise IndvisionError(f"{flag} works on the local path only, not with --ray")
    if not args.out:
        raise IndvisionError("--ray needs --out results.parquet or results.jsonl")
    job = ray_predict.Job(args.bundle, Path(args.out), args.model, args.runtime,
                          args.allow_unshippable, args.group_regex, args.per_image,
                          args.ray or None, args.actors, args.threads,
                          tuple(map(str, signing.trusted_key_paths(args.trust))) or None)
    paths = list(expand_sources(args.paths))
    if not paths:
        raise IndvisionError(f"no image files in {' '.join(args.paths)}")
    done = ray_predict.run(job, paths)
    print(f"ray: {len(paths)} images on {done['actors']} actor(s): {done['rows']} rows in "
          f"{done['out']}, {done['errors']} unreadable", file=sys.stderr)
    return 1 if done["errors"] else 0
