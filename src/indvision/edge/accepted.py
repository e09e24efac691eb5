"""Rollbacks: ``latest.json`` pointed at an older signed bundle of a pipeline already run.

Whoever can write ``latest.json`` can point a device at *any* bundle a trusted key ever signed,
including one since replaced for a reason (a model that missed a defect). The signature makes
``model.json``'s ``provenance.created`` (and ``run_id``) trustworthy, so under trusted keys this
module keeps, per user, the newest bundle accepted through ``latest.json`` for each pipeline:
``$INDVISION_STATE_DIR/accepted.json``, else ``$XDG_STATE_HOME/indvision/accepted.json``, else
``~/.local/state/indvision/accepted.json``. A bundle older than that record (``created``,
then ``run_id`` breaking ties) is refused in one line unless a person asks for it
(``allow_rollback``, ``--allow-rollback``); the one that runs becomes the record.

Only bundles reached through ``latest.json`` and checked under a trusted key are ordered: a
person naming a bundle folder is asking for that bundle, and without a signature ``created``
is whatever the file says. TF-free: the edge runtime imports it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from indvision import atomic
from indvision.errors import IndvisionError

STATE_ENV = "INDVISION_STATE_DIR"
STATE_NAME = "accepted.json"
FORMAT = "indvision-accepted/1"
MAX_STATE_BYTES = 2**20  # one small entry per pipeline


@dataclass(frozen=True)
class Accepted:
    """One signed bundle as the rollback check orders it (fields from its signed model.json)."""

    pipeline: str
    run_id: str
    created: str
    key_id: str

    def order(self) -> tuple[dt.datetime, str]:
        """What "older" means: ``created``, then ``run_id``."""
        return _parse_time(self.created), self.run_id

    def named(self) -> str:
        return f"{self.run_id or '(no run id)'} (created {self.created})"


def state_path() -> Path:
    """Where this user's record of accepted bundles lives (see the module docstring)."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).expanduser() / STATE_NAME
    base = os.environ.get("XDG_STATE_HOME") or Path("~/.local/state").expanduser()
    return Path(base) / "indvision" / STATE_NAME


def _parse_time(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _entry(pipeline: str, raw: Any) -> Accepted:
    """One record entry, checked (ValueError when it is not one this module wrote)."""
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str)
                                            for k in ("run_id", "created", "key_id")):
        raise ValueError(f"entry for pipeline {pipeline!r} is not a record")
    entry = Accepted(pipeline, raw["run_id"], raw["created"], raw["key_id"])
    entry.order()  # a created time that does not parse is damage too
    return entry


def read_state(path: Path | None = None) -> dict[str, Accepted]:
    """The accepted bundle per pipeline ({} when there is no record yet); a damaged or
    oversized file is one line naming it."""
    path = path or state_path()
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise IndvisionError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if len(raw) > MAX_STATE_BYTES:
            raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
        record = json.loads(raw.decode("utf-8"))
        if not isinstance(record, dict) or record.get("format") != FORMAT \
                or not isinstance(record.get("pipelines"), dict):
            raise ValueError(f"expected format {FORMAT}")
        return {name: _entry(name, entry) for name, entry in record["pipelines"].items()}
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndvisionError(f"{path}: damaged record of accepted bundles ({exc}); delete it "
                             "to start over (the next signed bundle run through latest.json "
                             "becomes the newest accepted)") from None


def of_bundle(meta: dict[str, Any], signed_by: str) -> Accepted | None:
    """The ordering fields of a signed, parsed ``model.json``; None when it names no
    pipeline (nothing to compare it with)."""
    provenance = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    pipeline = meta.get("pipeline") or provenance.get("pipeline")
    if not isinstance(pipeline, str) or not pipeline:
        return None
    return Accepted(pipeline, str(provenance.get("run_id") or ""),
                    str(provenance.get("created") or ""), signed_by)


def check(latest: Path, meta: dict[str, Any], signed_by: str | None,
          allow_rollback: bool = False) -> Accepted | None:
    """Refuse a signed bundle reached through ``latest`` that is older than the one accepted
    before for its pipeline, unless ``allow_rollback``. Returns the entry to :func:`remember`
    once the bundle has loaded (None: nothing to record: unsigned, no pipeline, no time)."""
    if signed_by is None:
        return None
    candidate = of_bundle(meta, signed_by)
    if candidate is None:
        return None
    known = read_state().get(candidate.pipeline)
    try:
        candidate.order()
    except ValueError:
        if known is not None and not allow_rollback:
            raise IndvisionError(f"{latest}: points at {candidate.run_id or 'a bundle'} whose "
                                 "signed model.json has no provenance.created to order it by, "
                                 f"after {known.named()} was accepted for pipeline "
                                 f"{candidate.pipeline!r}; pass --allow-rollback to run it"
                                 ) from None
        return None
    if known is not None and candidate.order() < known.order() and not allow_rollback:
        raise IndvisionError(f"{latest}: points at {candidate.named()}, older than "
                             f"{known.named()} accepted before for pipeline "
                             f"{candidate.pipeline!r} (recorded in {state_path()}); pass "
                             "--allow-rollback to run it")
    return candidate


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One read-modify-write of the record at a time (POSIX advisory lock beside it)."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic write still keeps the file whole
        yield
        return
    with path.with_name(f".{path.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def remember(entry: Accepted | None, allow_rollback: bool = False) -> None:
    """Record ``entry`` as its pipeline's newest accepted bundle: when it is newer than the
    record, or when a person allowed the rollback to it."""
    if entry is None:
        return
    path = state_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            state = read_state(path)
            known = state.get(entry.pipeline)
            if known is not None and not allow_rollback and entry.order() <= known.order():
                return  # the same bundle again (or a newer one recorded meanwhile)
            state[entry.pipeline] = entry
            atomic.write_json(path, {"format": FORMAT, "pipelines": {
                name: {k: v for k, v in asdict(e).items() if k != "pipeline"}
                for name, e in sorted(state.items())}})
    except OSError as exc:
        raise IndvisionError(f"cannot record the accepted bundle in {path} "
                             f"({exc.strerror or exc}); set {STATE_ENV} to a writable "
                             "folder") from None
