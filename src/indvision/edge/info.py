"""``python -m indvision.edge info BUNDLE``: what a bundle is, where it came from, its lineage.

Read from ``model.json`` alone (checked against its sha256 records first, as every edge
command does): the run and pipeline that made it, classes and decision (good class,
threshold, group rule), the model input, each model file (format, size, verify's verdict),
the test numbers evaluate measured, provenance (dataset hash, git commit), and the lineage
chain: ``model.json`` ``lineage`` names the parent a run was started from (run id and the
parent's ``model.json`` sha256); where the parent's bundle is still beside this run
(``exports/<pipeline>/<parent run>/bundle``) its own lineage is followed, up to the root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from indvision import formats, layout, signing
from indvision.edge.runtime import check_model_json, locate_bundle

MAX_DEPTH = 50  # a lineage loop (a copied bundle naming itself) must not hang the command


def lineage_chain(bundle: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """This bundle's ancestors, nearest first: each ``{"run_id", "model_json_sha256",
    "found"}`` plus the parent's own fields where its bundle was found beside this run."""
    chain: list[dict[str, Any]] = []
    lineage, exports = meta.get("lineage") or {}, bundle.parent.parent
    while lineage.get("parent_run") and len(chain) < MAX_DEPTH:
        parent = exports / str(lineage["parent_run"]) / "bundle"
        entry = {"run_id": lineage["parent_run"],
                 "model_json_sha256": lineage.get("parent_model_json_sha256"),
                 "classes_added": lineage.get("classes_added") or [],
                 "found": (parent / layout.MODEL_JSON).is_file()}
        chain.append(entry)
        if not entry["found"]:
            break
        lineage = formats.read_model_json(parent).get("lineage") or {}
    return chain


def summary(path: str) -> dict[str, Any]:
    """The bundle at ``path`` (bundle, run or exports/<pipeline> folder) described, from one
    read of its ``latest.json`` (when through one) and of its ``model.json``: what is checked
    is what is described."""
    bundle, followed = locate_bundle(path)  # the one read of latest.json, if through one
    data = check_model_json(bundle, Path(path), followed=followed)  # the one of model.json
    meta = formats.read_model_json(bundle, data)
    if followed is not None:
        layout.check_pipeline(followed, meta)
    provenance = meta.get("provenance") or {}
    decision = meta.get("decision") or {}
    test = (meta.get("metrics") or {}).get("test") or {}
    groups = (meta.get("metrics") or {}).get("test_groups") or {}
    return {
        "bundle": str(bundle), "pipeline": meta.get("pipeline"),
        "run_id": provenance.get("run_id"), "created": provenance.get("created"),
        "classes": meta["classes"], "good_class": decision.get("good_class"),
        "threshold": decision.get("threshold"), "group_regex": decision.get("group_regex"),
        "input": meta["input_spec"], "default_model": meta.get("default_model"),
        "files": {name: {key: entry.get(key) for key in ("format", "bytes", "shippable",
                                                         "verified")}
                  for name, entry in meta["files"].items()},
        "test": {key: test.get(key) for key in ("n", "accuracy", "errors", "macro_f1",
                                                "defect_recall") if key in test},
        "test_objects": {key: groups.get(key) for key in ("n", "accuracy", "errors")
                         if key in groups},
        "dataset_hash": provenance.get("dataset_hash"),
        "git_commit": provenance.get("git_commit"),
        "lineage": lineage_chain(bundle, meta),
        # who signed (as recorded, not checked: predict and serve check with --trust)
        "signatures": [{key: entry.get(key) for key in ("key_id", "signer", "signed_at")}
                       for entry in signing.read_signatures(bundle)],
    }


def text(info: dict[str, Any]) -> str:
    """The summary for a person."""
    spec = info["input"]
    rule = (f"P({info['good_class']}) >= {info['threshold']:.4f}, else the most likely defect"
            if info["good_class"] and info["threshold"] is not None else "arg-max")
    if info["group_regex"]:
        rule += f"; views grouped by {info['group_regex']!r}"
    lines = [f"bundle     {info['bundle']}",
             f"run        {info['pipeline']}/{info['run_id']} ({info['created']})",
             f"classes    {', '.join(info['classes'])}",
             f"decision   {rule}",
             f"input      {spec.get('width')}x{spec.get('height')} RGB, resize "
             f"{spec.get('resize')}" + (f", crop {spec['crop']}" if spec.get("crop") else "")]
    for name, entry in info["files"].items():
        verdict = {True: "shippable", False: "NOT shippable", None: "not verified"}[
            entry.get("shippable")]
        default = " (default)" if name == info["default_model"] else ""
        lines.append(f"file       {name}{default}: {entry.get('format')}, "
                     f"{(entry.get('bytes') or 0) / 1e6:.2f} MB, {verdict}")
    test = info["test"]
    if test:
        line = f"test       accuracy {100 * test['accuracy']:.1f} % ({test.get('errors')} errors " \
               f"/ {test.get('n')})"
        if test.get("defect_recall") is not None:
            line += f", defect recall {100 * test['defect_recall']:.1f} %"
        if info["test_objects"]:
            objects = info["test_objects"]
            line += f", per object {100 * objects['accuracy']:.1f} % ({objects['errors']} / " \
                    f"{objects['n']})"
        lines.append(line)
    signers = [f"{s['key_id']} ({s.get('signer') or 'unnamed'}, {s.get('signed_at')})"
               for s in info.get("signatures") or []]
    lines.append(f"signed     {'; '.join(signers)} (not checked here: --trust checks it)"
                 if signers else "signed     no (model.json.sig absent)")
    lines.append(f"data       dataset hash {str(info['dataset_hash'])[:16]}, "
                 f"git {str(info['git_commit'])[:12]}")
    if not info["lineage"]:
        lines.append("lineage    none: trained from its backbone's weights, not from a parent")
    for depth, parent in enumerate(info["lineage"], start=1):
        added = (f", added {', '.join(parent['classes_added'])}" if parent["classes_added"]
                 else "")
        where = "" if parent["found"] else " (its bundle is not beside this run)"
        lines.append(f"lineage    {'  ' * (depth - 1)}<- {parent['run_id']}{added}{where}")
    return "\n".join(lines)
