"""The edge runtime: run an exported bundle with numpy, OpenCV and onnxruntime only.

Copy a bundle folder (``model.json`` + model files) to the device, ``pip install indvision``
(no extras; ``indvision[litert]`` to run the ``.tflite`` files) and::

    python -m indvision.edge predict  BUNDLE PATH... [--group-regex RE] [--per-image]
    python -m indvision.edge evaluate BUNDLE DATA_DIR [--group-regex RE]
                             [--write-golden FILE | --golden FILE]
    python -m indvision.edge info     BUNDLE [--json]
    python -m indvision.edge serve    BUNDLE [--host H] [--port P] [--token-file F]
                             [--follow [DIR]] [--trust KEY...] [--allow-rollback]
    python -m indvision.edge keygen   DIR
    python -m indvision.edge sign     BUNDLE --key PRIVATE
    python -m indvision.edge watch    BUNDLE SOURCE [--interval S] [--max-frames N]
                             [--group-regex RE] [--views N] [--object-timeout S] [--per-image]

``BUNDLE`` is a bundle folder, a run folder (its ``bundle/``), or ``exports/<pipeline>`` (the
bundle its ``latest.json`` points at: the newest run that passed every gate). ``--model FILE``
picks a file of the bundle (default: ``model.json``'s ``default_model``, ``model.onnx``).
Under ``--trust`` keys, ``exports/<pipeline>`` pointed at a signed bundle older than the one
accepted before for that pipeline is refused (a rollback) unless ``--allow-rollback``
(:mod:`indvision.edge.accepted`); ``serve --follow`` refuses later rollbacks either way.

- ``predict`` prints one JSON line per image: ``{"path", "label", "score", "scores"}``. An
  image that cannot be read gets ``{"path", "error"}`` instead and the others carry on; the exit
  code is then 1 (so a script notices), after every image was tried.
- ``predict`` with a **group rule** (``model.json``'s ``decision.group_regex``, or
  ``--group-regex RE``: the regex's first group on the file name names the object) prints one
  JSON line per object instead: ``{"group", "label", "score", "scores", "views": [paths],
  "decided_by": path}``. The object takes its least-good view (a defect seen in any view
  decides it; ``decided_by`` is that view), exactly as ``EdgeClassifier.predict_groups``.
  A file the regex does not match is an object of its own. An unreadable view gets its own
  ``{"path", "error"}`` line and its object is decided on its readable views (exit code 1).
  ``--per-image`` prints the per-image lines instead.
- ``predict`` reads image files, folders, list files (``.txt``/``.lst``) and CSVs with a
  ``path`` column (:mod:`indvision.edge.sources`). With ``--ray [ADDRESS] --out FILE``
  (``.parquet`` or ``.jsonl``) it scores them on Ray Data instead, one onnxruntime session
  per actor (``--actors``, ``--threads``), and Ray's writers write the same rows
  (:mod:`indvision.edge.scale`).
- ``info`` prints what a bundle is (run, classes, decision, input, files and verify's
  verdicts, test numbers, provenance) and its lineage chain, from ``model.json`` alone.
- ``predict`` and ``watch`` with ``--collect DIR`` keep the images worth a person's look in
  ``DIR/<predicted label>/`` with a row each in ``DIR/collected.csv``: uncertain calls
  (``--collect-margin``, ``--collect-band``), every defect call with ``--collect-rejected``, a
  random ``--collect-sample`` of the confident ones; bounded by ``--collect-max-images`` and
  ``--collect-max-mb`` (``--collect-when-full drop-oldest|stop``). See
  :mod:`indvision.edge.collect`.
- ``predict`` and ``evaluate`` show their progress on stderr: a bar with rate and ETA on a
  terminal, a plain count line every 10 s of work otherwise (``--progress-every S``;
  ``--no-progress``: none).
- ``evaluate`` takes a folder-per-class tree and prints one JSON object: ``n``, ``accuracy``,
  ``macro_f1``, ``per_class`` precision/recall/F1, ``confusion`` (rows = true class), and
  ``groups`` (the same on fused views) when a group regex applies. A class folder the bundle
  does not know is an error (exit 1); unreadable images are listed in ``skipped`` and make the
  exit code 1 after the report is printed.

Regression guard (golden files) — record a model's behaviour on held-out images once, then
check every later model (a retrained one, another format, another device, a library upgrade)
against it before it ships::

    python -m indvision.edge evaluate BUNDLE HELDOUT --write-golden golden.json [--floor-margin M]
    python -m indvision.edge evaluate NEW_BUNDLE HELDOUT --golden golden.json [--max-changed N]

- ``--write-golden FILE`` saves every image's true class (its folder), predicted label and
  scores, and the **metric floors**: accuracy and each class's recall as measured now, minus
  ``--floor-margin`` (a fraction, default 0.0: the new model must do at least as well).
- ``--golden FILE`` checks the bundle against it and exits 1 when accuracy or any class's
  recall is below its floor, when more than ``--max-changed`` images (default 0) predict
  another label than the golden record, or when a golden image is missing or unreadable.
  Scores are checked too when the golden was recorded from this very model file (same
  sha256: another device, a library upgrade must reproduce them within 1e-4); for another
  model (retrained, another format) only labels and floors count, unless
  ``--golden-tolerance DIFF`` asks for scores within DIFF. The report's ``golden`` part holds
  ``passed``, ``failures`` (one sentence each), ``floors`` (floor, measured, passed per
  metric) and ``changed`` (every image whose label changed: ``image``, ``path``, ``true``,
  ``golden``, ``now``); stderr lists them too.
- ``watch`` follows a folder being filled (each new image predicted once, one JSON line each;
  images already there are predicted first) or a video file / camera index (one JSON line per
  frame). It ends after ``--max-frames`` predictions, at the end of a video, or on Ctrl-C
  (exit 0).
- ``watch`` on a folder with a group rule collects the arriving views per object and prints
  one object line (as ``predict``'s) when the object is complete: it has ``--views N`` views
  (default: ``model.json``'s ``decision.views_per_object``, if any), or no new view of it
  arrived for ``--object-timeout S`` seconds (default: 3 x the poll interval), or the watch
  ends (``--max-frames`` views, Ctrl-C): pending objects are then printed as they are. An
  unreadable view gets its own error line as it arrives. Video and camera frames have no file
  names: streams are always one line per frame. ``--per-image`` gives per-image lines.
- Every other error (missing bundle, tampered model file, unshippable model, bad arguments) is
  one line ``error: ...`` on stderr and exit code 1, never a traceback.

Labels are decided exactly as evaluate decided them (:func:`indvision.metrics.decide` with the
bundle's good class and threshold); views of one object are fused with
:func:`indvision.metrics.fuse_groups`. The package never imports TensorFlow or Keras (a test
checks every module in a fresh interpreter).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from indvision import atomic, formats, signing
from indvision.edge import info as bundle_info
from indvision.edge.collect import WHEN_FULL, CollectConfig, Collector
from indvision.edge.evaluate import evaluate_tree, predict_tree
from indvision.edge.golden import compare_golden, golden_record, golden_summary, read_golden
from indvision.edge.objects import check_regex, object_rule
from indvision.edge.progress import Progress
from indvision.edge.runtime import EdgeClassifier, predict_files, predict_objects
from indvision.edge.sources import expand_sources
from indvision.edge.watching import watch
from indvision.errors import IndvisionError


def _add_objects(sub: argparse.ArgumentParser) -> None:
    """--group-regex and --per-image (predict, watch)."""
    sub.add_argument("--group-regex", help="views of one object: the regex's first group on "
                                           "the file name (default: the bundle's)")
    sub.add_argument("--per-image", action="store_true",
                     help="one line per image even where a group rule applies")

def _add_progress(sub: argparse.ArgumentParser) -> None:
    """--no-progress and --progress-every (predict, evaluate)."""
    sub.add_argument("--no-progress", action="store_true",
                     help="no progress on stderr (a bar on a terminal, else a count line "
                          "every --progress-every seconds of work)")
    sub.add_argument("--progress-every", type=float, default=10.0, metavar="S",
                     help="off a terminal: seconds between progress lines (default 10)")

def _add_heatmaps(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--heatmaps", metavar="DIR",
                     help="write each image's map on the image as the model saw it, "
                          "<name>.heatmap.png in DIR (frames: frame_<n>.heatmap.png): a "
                          "classifier's class-activation map of the decided class, an anomaly "
                          "model's anomaly map; colour scale fixed to 0-1 on every frame; "
                          "per image (with a group rule: --per-image)")


def _add_collect(sub: argparse.ArgumentParser) -> None:
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


def _add_ray(sub: argparse.ArgumentParser) -> None:
    """--ray and its sizing (predict): see indvision.edge.scale."""
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


def _add_key_commands(commands: Any) -> None:
    """keygen and sign: keys and signatures (indvision.signing)."""
    keygen = commands.add_parser("keygen", help="make an Ed25519 key pair for signing "
                                                "bundles")
    keygen.add_argument("folder", metavar="DIR")
    sign = commands.add_parser("sign", help="sign a bundle's model.json (adds a signature; "
                                            "the same key signing again replaces its own)")
    sign.add_argument("bundle", help="bundle folder, run folder, or exports/<pipeline>")
    sign.add_argument("--key", required=True, metavar="PRIVATE", help="private key file")
    sign.add_argument("--signer", help="who signs (a name recorded beside the signature)")


def _add_serve_options(sub: argparse.ArgumentParser) -> None:
    """serve's address, token, limits and --follow (indvision.edge.service)."""
    sub.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1: this machine only)")
    sub.add_argument("--port", type=int, default=8000)
    sub.add_argument("--allowed-host", action="append", default=None, metavar="NAME",
                     help="also answer requests whose Host header is NAME (besides --host "
                          "and localhost); others get 400 (DNS rebinding)")
    sub.add_argument("--token-file", metavar="FILE",
                     help="require 'Authorization: Bearer <token>' (the file's one line, "
                          "16+ characters) on every endpoint but /healthz")
    sub.add_argument("--follow", nargs="?", const="", default=None, metavar="DIR",
                     help="reload when DIR/latest.json changes (default DIR: BUNDLE, an "
                          "exports/<pipeline> folder); a bad bundle is refused and the "
                          "old one keeps serving")
    sub.add_argument("--follow-interval", type=float, default=2.0, metavar="S")
    sub.add_argument("--max-body-mb", type=float, default=20.0, metavar="MB",
                     help="larger request bodies get 413 (default 20)")
    sub.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                     help="images whose header claims more pixels get 422 before "
                          "decoding (default 40 M)")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m indvision.edge`` parser: predict, evaluate, watch."""
    parser = argparse.ArgumentParser(prog="python -m indvision.edge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("bundle", help="bundle folder, run folder, or exports/<pipeline>")
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

    predict = add("predict", "one JSON line per image (per object with a group rule)")
    _add_progress(predict)
    _add_collect(predict)
    predict.add_argument("paths", nargs="+", metavar="PATH",
                         help="image files, folders, list files (.txt/.lst, one path a line) "
                              "or CSVs with a 'path' column")
    _add_heatmaps(predict)
    _add_objects(predict)
    _add_ray(predict)
    evaluate = add("evaluate", "metrics on a folder-per-class tree")
    evaluate.add_argument("data_dir", metavar="DATA_DIR")
    _add_progress(evaluate)
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
    _add_key_commands(commands)
    info = commands.add_parser("info", help="what a bundle is, where it came from, its "
                                            "lineage")
    info.add_argument("bundle", help="bundle folder, run folder, or exports/<pipeline>")
    info.add_argument("--json", action="store_true", help="the summary as JSON")
    _add_serve_options(add("serve", "an HTTP service: POST /predict, /predict/object; "
                           "GET /model, /healthz, /metrics, and a live page at /"))
    watch_cmd = add("watch", "predict images arriving in a folder, or video / camera frames")
    watch_cmd.add_argument("source", metavar="SOURCE", help="folder, video file or camera index")
    watch_cmd.add_argument("--interval", type=float, default=None,
                           help="seconds between folder polls (default 1) or between predicted "
                                "frames of a stream (default 0: every frame)")
    watch_cmd.add_argument("--max-frames", type=int, default=None,
                           help="stop after this many predictions (images, with a group rule: "
                                "views)")
    _add_objects(watch_cmd)
    _add_collect(watch_cmd)
    _add_heatmaps(watch_cmd)
    watch_cmd.add_argument("--views", type=int, default=None, metavar="N",
                           help="with a group rule: an object is complete with N views "
                                "(default: model.json's decision.views_per_object)")
    watch_cmd.add_argument("--object-timeout", type=float, default=None, metavar="S",
                           help="with a group rule: an object is complete when no new view "
                                "arrived for S seconds (default: 3 x --interval)")
    return parser


def _emit_line(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def _collector(classifier: EdgeClassifier, args: argparse.Namespace) -> Collector | None:
    """The ``--collect`` folder's collector, or None without ``--collect``."""
    if not args.collect:
        return None
    config = CollectConfig(args.collect_margin, args.collect_band, args.collect_rejected,
                           args.collect_sample, args.collect_max_images,
                           int(args.collect_max_mb * 1e6), args.collect_when_full,
                           args.collect_seed)
    return Collector(args.collect, config, classifier.good_class, classifier.threshold,
                     (classifier.meta.get("provenance") or {}).get("run_id"))


def _collecting(emit: Any, collector: Collector | None) -> Any:
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


def _predict_command(classifier: EdgeClassifier, args: argparse.Namespace) -> int:
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
    collector = _collector(classifier, args)
    emit = _collecting(_emit_line, collector)
    heatmaps = _heatmap_dir(classifier, args.heatmaps)
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


def _heatmap_dir(classifier: EdgeClassifier, folder: str | None) -> Path | None:
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


def _evaluate_command(classifier: EdgeClassifier, args: argparse.Namespace) -> int:
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


def _watch_command(classifier: EdgeClassifier, args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < 1:
        raise IndvisionError("--max-frames must be at least 1")
    rule = None if args.per_image else object_rule(classifier, None, args.views,
                                                   args.object_timeout)
    if rule is None and not args.per_image and (args.views or args.object_timeout):
        raise IndvisionError("--views and --object-timeout need a group rule: --group-regex, "
                             "or decision.group_regex in model.json")
    heatmaps = _heatmap_dir(classifier, args.heatmaps)
    collector = _collector(classifier, args)
    try:
        watch(classifier, args.source, _collecting(_emit_line, collector), args.interval,
              args.max_frames, rule,
              keep_frame=(lambda result, rgb: collector.offer(result, image=rgb))
              if collector is not None else None, heatmaps=heatmaps)
    except KeyboardInterrupt:
        pass
    finally:
        if collector is not None:
            collector.close()
    return 0


def _ray_predict_command(args: argparse.Namespace) -> int:
    """``predict --ray``: the same rows as ``predict``, scored on Ray Data, written to --out."""
    from indvision.edge import scale

    for flag, value in (("--collect", args.collect), ("--heatmaps", args.heatmaps),
                        ("--allow-rollback", args.allow_rollback)):
        if value:
            raise IndvisionError(f"{flag} works on the local path only, not with --ray")
    if not args.out:
        raise IndvisionError("--ray needs --out results.parquet or results.jsonl")
    job = scale.Job(args.bundle, Path(args.out), args.model, args.runtime,
                    args.allow_unshippable, args.group_regex, args.per_image,
                    args.ray or None, args.actors, args.threads,
                    tuple(map(str, signing.trusted_key_paths(args.trust))) or None)
    paths = list(expand_sources(args.paths))
    if not paths:
        raise IndvisionError(f"no image files in {' '.join(args.paths)}")
    done = scale.run(job, paths)
    print(f"ray: {len(paths)} images on {done['actors']} actor(s): {done['rows']} rows in "
          f"{done['out']}, {done['errors']} unreadable", file=sys.stderr)
    return 1 if done["errors"] else 0


def _check_ray_flags(args: argparse.Namespace) -> None:
    """--out, --actors and --threads mean something only with --ray."""
    if getattr(args, "ray", None) is None and (getattr(args, "out", None)
                                              or getattr(args, "actors", None) is not None
                                              or getattr(args, "threads", 1) != 1):
        raise IndvisionError("--out, --actors and --threads go with --ray")


def _keygen_command(args: argparse.Namespace) -> int:
    private, public = signing.keygen(args.folder)
    print(f"private key {private} (keep it off the devices; export.signing_key or "
          f"{signing.SIGNING_KEY_ENV} names it)\npublic key {public} (give it to the devices: "
          f"--trust or {signing.TRUSTED_KEYS_ENV})")
    return 0


def _sign_command(args: argparse.Namespace) -> int:
    from indvision.edge.runtime import resolve_bundle

    bundle = resolve_bundle(args.bundle)
    done = signing.sign_bundle(bundle, args.key, args.signer)
    what = "replaced its own earlier signature" if done["replaced"] else "added a signature"
    print(f"signed {bundle / signing.MODEL_JSON} with key {done['key_id']}: {what}; "
          f"{done['signatures']} signature(s) in {bundle / signing.SIGNATURE}")
    if done["dropped"]:
        print(f"warning: dropped signature(s) by {', '.join(done['dropped'])}: they no longer "
              "match model.json", file=sys.stderr)
    return 0


KEY_COMMANDS = {"keygen": _keygen_command, "sign": _sign_command}


def warn_if_unverified(classifier: EdgeClassifier) -> None:
    """One stderr line when the model file about to answer was never checked by verify."""
    if not classifier.verified:
        print(f"warning: {classifier.bundle.name}/{classifier.model_file} has not been "
              "verified against the Keras model (run the verify stage)", file=sys.stderr)


def _serve_command(args: argparse.Namespace) -> int:
    """``serve``: the bundle behind HTTP (:mod:`indvision.edge.service`)."""
    from indvision.edge import hotswap, service

    if not service.is_loopback(args.host) and not args.token_file:
        print(f"error: --host {args.host} reaches other machines: give --token-file too",
              file=sys.stderr)
        return 2
    token = service.read_token(args.token_file) if args.token_file else None
    limits = service.Limits(int(args.max_body_mb * 1e6), args.max_pixels)
    follow = None if args.follow is None else (args.follow or args.bundle)
    source = follow or args.bundle
    allow_rollback = [args.allow_rollback]  # the first load only: later rollbacks are refused

    def load() -> EdgeClassifier:
        allow, allow_rollback[0] = allow_rollback[0], False
        return EdgeClassifier(source, args.model, allow_unshippable=args.allow_unshippable,
                              spin_wait=not args.no_spin_wait, runtime=args.runtime,
                              trusted_keys=args.trust, allow_rollback=allow)

    slot = hotswap.ModelSlot(load)
    signing.warn_if_unchecked(slot.get().bundle, slot.get().signed_by)
    warn_if_unverified(slot.get())
    follower = None
    if follow is not None:
        follower = hotswap.Follower(slot, follow, args.follow_interval)
        follower.start()
    try:
        service.serve(slot, args.host, args.port, token, limits, follower, args.allowed_host)
    finally:
        if follower is not None:
            follower.stop()
    return 0


COMMANDS = {"predict": _predict_command, "evaluate": _evaluate_command,
            "watch": _watch_command}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in KEY_COMMANDS:  # no bundle is run
            return KEY_COMMANDS[args.command](args)
        if args.command == "info":  # model.json only: no runtime is loaded
            described = bundle_info.summary(args.bundle)
            print(json.dumps(described, indent=2) if args.json else bundle_info.text(described))
            return 0
        _check_ray_flags(args)
        if args.command == "predict" and args.ray is not None:
            return _ray_predict_command(args)
        if args.command == "serve":
            return _serve_command(args)
        classifier = EdgeClassifier(args.bundle, args.model,
                                    allow_unshippable=args.allow_unshippable,
                                    group_regex=args.group_regex,
                                    spin_wait=not args.no_spin_wait,
                                    runtime=args.runtime, trusted_keys=args.trust,
                                    allow_rollback=args.allow_rollback)
        signing.warn_if_unchecked(classifier.bundle, classifier.signed_by)
        if classifier.group_regex:
            check_regex(classifier.group_regex)
        warn_if_unverified(classifier)
        return COMMANDS[args.command](classifier, args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, like grep
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except IndvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
