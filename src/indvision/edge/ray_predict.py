"""Batch inference over many images on Ray Data: ``edge predict BUNDLE SOURCE... --ray``.

Re-scoring an archive outgrows one process long before it outgrows one model. Ray Data does
the distribution; this module says what one actor does: :class:`BundleScorer` holds one
:class:`~indvision.edge.EdgeClassifier` (one onnxruntime session, ``threads`` intra-op threads
and as many reserved CPUs) and turns each path into one row decided exactly as the local
``predict`` decides it (:func:`indvision.edge.runtime.score_files`); a bad image is an error
row, never a failed job. With a group rule the rows are fused per object after the map by the
local rule (:func:`indvision.edge.objects.fuse_objects`). Ray's writers write the rows to a
temporary folder beside ``--out``, renamed into place when the job is done, so a crashed job
never leaves a half result under the final name. On a cluster the bundle, images and ``--out``
must be at the same paths on every node. Optional extra ``[scale]``; never imports TensorFlow.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indvision import decision, ray_cluster, signing
from indvision.edge.objects import fuse_objects
from indvision.errors import IndvisionError

#: ``--out`` suffixes: Ray Data's parquet and JSON-lines writers.
WRITERS = (".parquet", ".jsonl")
BATCH_SIZE = 32  # images per actor call: one onnxruntime batch, as the local predict uses


@dataclass(frozen=True)
class Job:
    """One batch-inference job: which bundle, where the rows go, how the work is split."""

    bundle: str
    out: Path
    model: str | None = None
    runtime: str | None = None
    allow_unshippable: bool = False
    group_regex: str | None = None
    per_image: bool = False
    address: str | None = None  # None: a local Ray started for the job; "auto", "ray://..."
    actors: int | None = None  # None: the cluster's CPUs // threads
    threads: int = 1  # onnxruntime intra-op threads (and CPUs reserved) per actor
    trusted_keys: tuple[str, ...] | None = None  # public keys: every actor checks the signature

    def __post_init__(self) -> None:
        if self.out.suffix not in WRITERS:
            raise IndvisionError(f"--out {self.out}: name it .parquet or .jsonl (Ray writes a "
                                 "folder of part files under that name)")
        if self.out.exists():
            raise IndvisionError(f"--out {self.out}: already exists; choose a new name (results "
                                 "are never overwritten)")
        if self.threads < 1 or (self.actors is not None and self.actors < 1):
            raise IndvisionError("--threads and --actors must be at least 1")


def schema(classes: Sequence[str], objects: bool) -> Any:
    """The rows' Arrow schema, fixed up front so every block (even all-error ones) agrees."""
    import pyarrow as pa

    scores = pa.struct([(name, pa.float64()) for name in classes])
    fields = [("path", pa.string()), ("label", pa.string()), ("score", pa.float64()),
              ("scores", scores), ("error", pa.string())]
    if objects:
        fields += [("group", pa.string()), ("probs", pa.list_(pa.float64())),
                   ("order", pa.int64())]
    return pa.schema(fields)


class BundleScorer:
    """Ray Data callable class: one :class:`EdgeClassifier` per actor, a batch of paths in,
    a table of result rows out (:func:`schema`)."""

    def __init__(self, bundle: str, model: str | None, runtime: str | None,
                 allow_unshippable: bool, threads: int, group_regex: str | None,
                 trusted_keys: tuple[str, ...] | None = None) -> None:
        from indvision.edge.runtime import EdgeClassifier

        self.classifier = EdgeClassifier(bundle, model, allow_unshippable=allow_unshippable,
                                         threads=threads, runtime=runtime,
                                         group_regex=group_regex, trusted_keys=trusted_keys)
        self.group_regex = group_regex
        self.schema = schema(self.classifier.classes, objects=group_regex is not None)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        from indvision.edge.runtime import score_files

        rows = []
        scored = score_files(self.classifier, [str(p) for p in batch["path"]],
                             batch_size=BATCH_SIZE)
        for (path, row), order in zip(scored, batch["order"], strict=True):
            result: dict[str, Any] = {"path": path, "order": int(order)}
            if isinstance(row, str):
                result["error"] = row
            else:
                result.update(self.classifier.results(row[None])[0])
                if self.group_regex is not None:
                    result["probs"] = [float(p) for p in row]
            if self.group_regex is not None:
                result["group"] = decision.group_key(path, self.group_regex, fallback=path)
            rows.append(result)
        return pa.Table.from_pylist(rows, schema=self.schema)  # drops "order" per image


def fuse_group(table: Any, classes: list[str], good_index: int | None,
               threshold: float | None, group_regex: str) -> Any:
    """``map_groups``: one object's view rows → its object row (the local rule) and one
    error row per unreadable view."""
    import pyarrow as pa

    from indvision.edge.runtime import decided_rows

    rows = sorted(table.to_pylist(), key=lambda row: row["order"])  # the views as given
    read = [r for r in rows if r["error"] is None]
    out: list[dict[str, Any]] = [{"path": r["path"], "error": r["error"]}
                                 for r in rows if r["error"] is not None]

    def results(probs: np.ndarray) -> list[dict[str, Any]]:
        return decided_rows(probs, classes, good_index, threshold)

    if read:
        probs = np.array([r["probs"] for r in read], dtype=np.float64)
        out += fuse_objects([r["path"] for r in read], probs, group_regex, good_index, results)
    return pa.Table.from_pylist(out, schema=object_schema(classes))


def object_schema(classes: Sequence[str]) -> Any:
    """Rows after fusing: objects (``group`` … ``decided_by``) and unreadable views."""
    import pyarrow as pa

    base = schema(classes, objects=False)
    return pa.schema([base.field("path"), pa.field("group", pa.string()), base.field("label"),
                      base.field("score"), base.field("scores"),
                      pa.field("views", pa.list_(pa.string())),
                      pa.field("decided_by", pa.string()), base.field("error")])


def actor_count(ray: Any, job: Job) -> int:
    """``job.actors``, or as many as the cluster's CPUs allow at ``job.threads`` each."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if job.actors is not None:
        if job.actors * job.threads > cpus:
            print(f"warning: --actors {job.actors} x --threads {job.threads} is more than the "
                  f"cluster's {cpus} CPUs: Ray starts the actors that fit and queues the rest",
                  file=sys.stderr)
        return job.actors
    return max(1, cpus // job.threads)


def run(job: Job, paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Score ``paths`` with the job's bundle on Ray and write the rows to ``job.out``; returns
    ``{"rows", "errors", "actors", "out"}``. The bundle is opened here first, so a missing or
    tampered bundle is one line before any cluster work."""
    from indvision.edge.runtime import EdgeClassifier

    local = EdgeClassifier(job.bundle, job.model, allow_unshippable=job.allow_unshippable,
                           group_regex=job.group_regex, runtime=job.runtime,
                           trusted_keys=job.trusted_keys)
    signing.warn_if_unchecked(local.bundle, local.signed_by)
    regex = None if job.per_image else local.group_regex
    ray = ray_cluster.start(job.address)
    actors = actor_count(ray, job)
    data = ray.data.from_items([{"path": str(p), "order": i} for i, p in enumerate(paths)])
    scored = data.map_batches(
        BundleScorer, batch_size=BATCH_SIZE, batch_format="numpy", num_cpus=job.threads,
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"bundle": str(local.bundle), "model": local.model_file,
                               "runtime": job.runtime, "allow_unshippable": job.allow_unshippable,
                               "threads": job.threads, "group_regex": regex,
                               "trusted_keys": job.trusted_keys})
    if regex is not None:
        scored = scored.groupby("group").map_groups(
            fuse_group, batch_format="pyarrow",
            fn_kwargs={"classes": local.classes, "good_index": local.good_index,
                       "threshold": local.threshold, "group_regex": regex})
    partial = job.out.with_name(f".{job.out.name}.partial-{os.getpid()}")
    try:
        if job.out.suffix == ".jsonl":  # pandas' to_json keeps 10 digits unless told
            scored.write_json(str(partial.resolve()),
                              pandas_json_args_fn=lambda: {"double_precision": 15})
        else:
            scored.write_parquet(str(partial.resolve()))
        os.replace(partial, job.out)  # first: nothing after the write may discard the rows
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    try:
        rows, errors = count_rows(job.out, job.out.suffix)
    except Exception as exc:  # the rows are safe under --out; only the count is missing
        raise IndvisionError(f"{job.out}: every row was written, but reading them back to "
                             f"count them failed: {str(exc).splitlines()[0]}") from None
    return {"rows": rows, "errors": errors, "actors": actors, "out": str(job.out)}


def count_rows(folder: Path, suffix: str) -> tuple[int, int]:
    """(rows, rows with an error) of a written result folder, reading the ``error`` column
    as the string it was written as: pyarrow's JSON reader would otherwise take its type from
    the first rows (null where they all read) and refuse a later file's error text."""
    import pyarrow as pa
    import pyarrow.dataset as arrow_dataset
    import pyarrow.json as arrow_json

    error = pa.schema([("error", pa.string())])
    if suffix == ".parquet":
        files = arrow_dataset.dataset(str(folder), format="parquet", schema=error)
    else:
        options = arrow_json.ParseOptions(explicit_schema=error,
                                          unexpected_field_behavior="ignore")
        files = arrow_dataset.dataset(str(folder), schema=error, format=arrow_dataset.
                                      JsonFileFormat(parse_options=options))
    errors = files.to_table(columns=["error"]).column("error")
    return len(errors), len(errors) - errors.null_count
