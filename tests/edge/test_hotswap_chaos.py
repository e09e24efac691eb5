"""Chaos for the ``latest.json`` follower with real bundles: a torn read of ``latest.json``, a
half-copied bundle, a garbage ``model.json``, an ``OSError`` mid-copy, a malformed ``key_id``
and a malformed ``input_spec``, then a good newer bundle. Throughout, ``POST /predict`` gives
the old model's answer, the follower thread stays alive and reports each refusal in
``/healthz`` and ``/metrics``, a refusal is retried only after its back-off (doubling), and the
good bundle is swapped in at the end. The follower's own thread is stepped poll by poll and its
clock is a counter: nothing sleeps, nothing is timed."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from indvision import atomic, formats, signing
from indvision.edge import EdgeClassifier
from indvision.edge.hotswap import Follower, ModelSlot
from tests.stages.conftest import verified_run  # noqa: F401

pytest.importorskip("fastapi", reason="the service is the optional [serve] extra: "
                                      "pip install -e '.[serve]'")
from fastapi.testclient import TestClient

from indvision.edge.service import create_app

BASE = "http://127.0.0.1"  # an allowed Host (the service answers loopback names only)
BACKOFF = 1.0


class Ticks:
    """Stands in for the follower's stop event: each ``wait`` (one per poll of its loop)
    blocks until the test calls :meth:`tick`, which returns once that poll is done."""

    def __init__(self) -> None:
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)
        self._stopping, self._waits = False, 0

    def wait(self, timeout: float | None = None) -> bool:
        if self._waits:
            self._done.release()
        self._waits += 1
        self._go.acquire()
        return self._stopping

    def set(self) -> None:
        self._stopping = True
        self._go.release()

    def tick(self) -> None:
        self._go.release()
        assert self._done.acquire(timeout=120), "the follower did not finish its poll"


def rerecord(bundle: Path, private: Path, change: Callable[[dict], Any] | None = None,
             raw: bytes | None = None) -> None:
    """Rewrite ``bundle/model.json`` (``change`` on its dict, or ``raw`` bytes) as its owner
    would: the sidecar and the signature follow, so only the content itself is wrong."""
    if change is not None:
        meta = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
        change(meta)
        atomic.write_json(bundle / "model.json", meta)
    if raw is not None:
        atomic.write_bytes(bundle / "model.json", raw)
    atomic.write_sha256_sidecar(bundle / "model.json")
    signing.sign_bundle(bundle, private, signer="test")


@pytest.fixture
def exports(bundle: Path, tmp_path: Path) -> dict[str, Any]:
    """``exports/`` with a signed ``old`` bundle and a signed ``new`` one that answers
    otherwise (its threshold on P(ok) is 0: every image is ``ok``), and the trusted key."""
    private, public = signing.keygen(tmp_path / "keys")
    folder = tmp_path / "exports"
    folder.mkdir()
    old = Path(shutil.copytree(bundle, folder / "old"))
    rerecord(old, private)
    new = Path(shutil.copytree(bundle, folder / "new"))
    rerecord(new, private, lambda meta: meta["decision"].update(threshold=0.0))
    atomic.write_json(folder / "latest.json", {"bundle": "old"})
    return {"folder": folder, "private": private, "public": public, "new": new}


def broken_copy(exports: dict[str, Any], name: str) -> Path:
    """A signed copy of the good new bundle named ``name``, that latest.json now names."""
    copy = Path(shutil.copytree(exports["new"], exports["folder"] / name))
    atomic.write_json(exports["folder"] / "latest.json", {"bundle": name})
    return copy


def tear_latest(folder: Path) -> None:
    """Leave latest.json half-written on disk, as a reader catching a plain (non-atomic)
    rewrite mid-way sees it: the follower and the loader both read the torn bytes."""
    latest = folder / "latest.json"
    text = latest.read_bytes()
    with latest.open("r+b") as handle:
        handle.truncate(len(text) // 2)


def chaos_steps(exports: dict[str, Any]) -> list[tuple]:
    """(what, set it up, words one of which the refusal names) for each broken thing, in
    order; a set-up patches through the monkeypatch it is given (undone after its step)."""
    private = exports["private"]

    def torn_read(patch: pytest.MonkeyPatch) -> None:
        broken_copy(exports, "torn")
        tear_latest(exports["folder"])

    def half_copied(patch: pytest.MonkeyPatch) -> None:
        model = broken_copy(exports, "half") / "model.onnx"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])

    def garbage_model_json(patch: pytest.MonkeyPatch) -> None:
        rerecord(broken_copy(exports, "garbage"), private, raw=b"{\"classes\": [garbage")

    def oserror_mid_copy(patch: pytest.MonkeyPatch) -> None:
        broken_copy(exports, "io")

        def fails(path: Any, entry: Any) -> bytes:
            raise OSError(5, "Input/output error")

        patch.setattr(formats, "read_model_file", fails)

    def malformed_key_id(patch: pytest.MonkeyPatch) -> None:
        sig = broken_copy(exports, "key") / "model.json.sig"
        record = json.loads(sig.read_text(encoding="utf-8"))
        record["signatures"][0]["key_id"] = ["not", "a", "key", "id"]
        sig.write_text(json.dumps(record), encoding="utf-8")

    def malformed_input_spec(patch: pytest.MonkeyPatch) -> None:
        rerecord(broken_copy(exports, "spec"), private,
                 lambda meta: meta.update(input_spec="224x224, probably"))

    return [("latest.json torn mid-read", torn_read, ("latest.json",)),
            ("half-copied bundle", half_copied, ("model.onnx",)),
            ("garbage model.json", garbage_model_json, ("model.json",)),
            ("OSError mid-copy", oserror_mid_copy, ("OSError",)),
            ("malformed key_id", malformed_key_id, ("damaged signature file",)),
            ("malformed input_spec", malformed_input_spec, ("bad 'input_spec' record",))]


def test_the_old_model_serves_through_chaos_and_a_good_bundle_swaps_in(
        exports: dict[str, Any], eval_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, trusted = exports["folder"], [exports["public"]]
    slot = ModelSlot(lambda: EdgeClassifier(folder, trusted_keys=trusted))
    follower = Follower(slot, folder, interval=0.0, backoff_min=BACKOFF, backoff_max=60.0)
    now = [0.0]
    follower.clock = lambda: now[0]
    ticks = Ticks()
    follower._stop_event = ticks  # type: ignore[assignment]  # the test steps each poll
    client = TestClient(create_app(slot, follower=follower), base_url=BASE)
    image_path = sorted((eval_tree / "scratch").iterdir())[0]
    old_answer = EdgeClassifier(folder / "old").predict(str(image_path))
    new_answer = EdgeClassifier(exports["new"]).predict(str(image_path))
    assert old_answer != new_answer  # else the swap could not be seen in the answers

    def answer() -> dict:
        got = client.post("/predict", content=image_path.read_bytes(),
                          headers={"Content-Type": "image/png"})
        assert got.status_code == 200, got.text
        return got.json()

    def health() -> dict:
        return client.get("/healthz").json()["follower"]

    follower.start()
    try:
        refusals = 0
        for what, set_up, words in chaos_steps(exports):
            with monkeypatch.context() as step:
                set_up(step)
                ticks.tick()  # a new latest.json: tried at once, refused
                refusals += 1
                state = health()
                assert state["alive"] and state["refusals"] == refusals, what
                assert any(w in state["last_refusal"]["reason"] for w in words), (what, state)
                assert state["swaps"] == 0 and state["retry_in"] == BACKOFF, what
                assert answer() == old_answer, what
                metrics = client.get("/metrics").text
                assert "indvision_follower_alive 1" in metrics, what
                assert f"indvision_follower_retry_seconds {BACKOFF}" in metrics, what
                assert f"indvision_model_refusals_total {refusals}" in metrics, what
                ticks.tick()  # within the back-off: not tried again
                assert health()["refusals"] == refusals, what
                now[0] += BACKOFF
                ticks.tick()  # the back-off passed: tried again, refused, waits twice as long
                refusals += 1
                state = health()
                assert state["refusals"] == refusals and state["retry_in"] == 2 * BACKOFF, what
                assert answer() == old_answer, what
        atomic.write_json(folder / "latest.json", {"bundle": "new"})
        ticks.tick()
        state = health()
        assert state["alive"] and state["swaps"] == 1 and state["refusals"] == refusals
        assert state["last_swap"] is not None and state["retry_in"] is None
        assert answer() == new_answer
        assert "indvision_follower_retry_seconds -1" in client.get("/metrics").text
    finally:
        follower.stop()
        follower.join(timeout=60)
    assert not follower.is_alive()



def test_a_huge_latest_json_is_refused_unread(tmp_path: Path) -> None:
    """A ``latest.json`` grown huge (a sparse 64 MiB file here; a link to a device alike) is
    refused after reading at most a bound of it: the follower never holds it whole, and the
    loader is never asked."""
    import tracemalloc

    from indvision.edge import hotswap

    loads = []
    slot = ModelSlot(lambda: loads.append(1) or "serving")
    atomic.write_json(tmp_path / "latest.json", {"bundle": "old"})
    follower = Follower(slot, tmp_path)
    with open(tmp_path / "latest.json", "r+b") as handle:
        handle.truncate(64 * 2**20)
    tracemalloc.start()
    try:
        assert follower.check() is False
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * hotswap.MAX_LATEST_BYTES  # bounded, not 64 MiB
    assert loads == [1] and slot.get() == "serving"  # only the first load ran
    assert "larger than" in follower.state()["last_refusal"]["reason"]
