"""``edge watch``: predict images arriving in a folder, or video / camera frames
(:mod:`indvision.edge.watching`)."""

from __future__ import annotations

import argparse
from typing import Any

from indvision.edge.cli_common import (
    add_bundle_command,
    add_collect,
    add_heatmaps,
    add_objects,
    collecting,
    collector_for,
    emit_line,
    heatmap_dir,
    load_classifier,
)
from indvision.edge.objects import object_rule
from indvision.edge.watching import watch
from indvision.errors import IndvisionError


def add(commands: Any) -> None:
    """The ``watch`` subcommand."""
    sub = add_bundle_command(commands, "watch", "predict images arriving in a folder, or "
                                                "video / camera frames")
    sub.add_argument("source", metavar="SOURCE", help="folder, video file or camera index")
    sub.add_argument("--interval", type=float, default=None,
                     help="seconds between folder polls (default 1) or between predicted "
                          "frames of a stream (default 0: every frame)")
    sub.add_argument("--max-frames", type=int, default=None,
                     help="stop after this many predictions (images, with a group rule: "
                          "views)")
    add_objects(sub)
    add_collect(sub)
    add_heatmaps(sub)
    sub.add_argument("--views", type=int, default=None, metavar="N",
                     help="with a group rule: an object is complete with N views "
                          "(default: model.json's decision.views_per_object)")
    sub.add_argument("--object-timeout", type=float, default=None, metavar="S",
                     help="with a group rule: an object is complete when no new view "
                          "arrived for S seconds (default: 3 x --interval)")
    sub.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``watch`` until ``--max-frames``, the end of a video, or Ctrl-C (exit 0)."""
    classifier = load_classifier(args)
    if args.max_frames is not None and args.max_frames < 1:
        raise IndvisionError("--max-frames must be at least 1")
    rule = None if args.per_image else object_rule(classifier, None, args.views,
                                                   args.object_timeout)
    if rule is None and not args.per_image and (args.views or args.object_timeout):
        raise IndvisionError("--views and --object-timeout need a group rule: --group-regex, "
                             "or decision.group_regex in model.json")
    heatmaps = heatmap_dir(classifier, args.heatmaps)
    collector = collector_for(classifier, args)
    try:
        watch(classifier, args.source, collecting(emit_line, collector), args.interval,
              args.max_frames, rule,
              keep_frame=(lambda result, rgb: collector.offer(result, image=rgb))
              if collector is not None else None, heatmaps=heatmaps)
    except KeyboardInterrupt:
        pass
    finally:
        if collector is not None:
            collector.close()
    return 0
