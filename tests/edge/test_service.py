"""``edge serve`` (:mod:`indvision.edge.service`): every endpoint answers as
:meth:`EdgeClassifier.predict` does, the token, the limits, no traceback in a response, and a
bundle swapped under concurrent requests with none failing. Skips without the ``[serve]``
extra."""

from __future__ import annotations

import json
import shutil
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from indvision import atomic
from indvision.edge import EdgeClassifier
from indvision.edge.hotswap import Follower, ModelSlot
from tests.edge.conftest import VIEWS_REGEX, write_views
from tests.stages.conftest import verified_run  # noqa: F401

pytest.importorskip("fastapi", reason="the service is the optional [serve] extra: "
                                      "pip install -e '.[serve]'")
from fastapi.testclient import TestClient

from indvision.edge.service import Limits, create_app

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "http://127.0.0.1"  # an allowed Host (the service answers loopback names only)


@pytest.fixture(scope="module")
def client(bundle: Path) -> TestClient:
    slot = ModelSlot(lambda: EdgeClassifier(bundle))
    return TestClient(base_url=BASE, app=create_app(slot, TOKEN, Limits(max_body_bytes=200_000,
                                                     max_pixels=1_000_000)))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (no real pixel data)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


def test_predict_answers_exactly_as_the_edge_classifier(client: TestClient, bundle: Path,
                                                        eval_tree: Path) -> None:
    paths = sorted((eval_tree / "spot").iterdir())[:3]
    want = EdgeClassifier(bundle).predict([str(p) for p in paths])
    one = client.post("/predict", content=paths[0].read_bytes(),
                      headers={**AUTH, "Content-Type": "image/png"})
    assert one.status_code == 200 and one.json() == want[0]
    many = client.post("/predict", headers=AUTH,
                       files=[("files", (p.name, p.read_bytes(), "image/png")) for p in paths])
    assert many.json() == {"results": [{"filename": p.name, **w}
                                       for p, w in zip(paths, want, strict=True)]}


def test_predict_object_decides_by_the_bundles_rule(client: TestClient, bundle: Path,
                                                    tmp_path: Path) -> None:
    views = [p for p in write_views(tmp_path / "views") if p.name.startswith("1_")]
    want = EdgeClassifier(bundle).predict_groups(views, VIEWS_REGEX)[0]
    got = client.post("/predict/object", headers=AUTH,
                      files=[("views", (p.name, p.read_bytes(), "image/png")) for p in views])
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["views"] == [p.name for p in views]
    assert body["decided_by"] == Path(want["decided_by"]).name
    assert (body["label"], body["score"], body["scores"]) == (want["label"], want["score"],
                                                              want["scores"])


def test_the_token_is_required_except_for_healthz_and_the_page(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "<table" in client.get("/").text
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = client.get("/model", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json() == {"error": "missing or wrong bearer token"}
    model = client.get("/model", headers=AUTH).json()
    assert model["classes"] == ["ok", "scratch", "spot"]
    assert model["serving"]["model_file"] == "model.onnx"


@pytest.mark.parametrize("body, content_type, status, reason", [
    (b"not an image at all", "image/png", 422, "not a decodable image"),
    (b"hello", "text/plain", 415, "is not an image"),
    (png_claiming(5000, 5000), "image/png", 422, "over the limit of 1000000"),
    (b"x" * 300_000, "image/png", 413, "over the limit of 200000"),
])
def test_bad_bodies_get_a_status_and_the_reason(client: TestClient, body: bytes,
                                                content_type: str, status: int,
                                                reason: str) -> None:
    got = client.post("/predict", content=body, headers={**AUTH, "Content-Type": content_type})
    assert got.status_code == status and reason in got.json()["error"]
    assert "Traceback" not in got.text


def test_a_chunked_body_over_the_limit_is_refused_while_reading(client: TestClient) -> None:
    chunks = (b"x" * 50_000 for _ in range(10))  # no Content-Length
    got = client.post("/predict", content=chunks, headers={**AUTH, "Content-Type": "image/png"})
    assert got.status_code == 413


def test_metrics_count_requests_latency_and_decisions(client: TestClient,
                                                      eval_tree: Path) -> None:
    image = sorted((eval_tree / "ok").iterdir())[0]
    client.post("/predict", content=image.read_bytes(),
                headers={**AUTH, "Content-Type": "image/png"})
    text = client.get("/metrics", headers=AUTH).text
    assert 'indvision_requests_total{endpoint="/predict",status="200"}' in text
    assert 'indvision_request_seconds_bucket{endpoint="/predict",le="+Inf"}' in text
    assert "indvision_decisions_total{label=" in text
    assert 'indvision_model_info{run_id="' in text


def test_an_internal_failure_is_json_without_a_traceback(bundle: Path,
                                                         eval_tree: Path) -> None:
    classifier = EdgeClassifier(bundle)

    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("onnxruntime fell over")

    classifier.scores = broken
    app = create_app(ModelSlot(lambda: classifier))
    got = TestClient(app, base_url=BASE).post("/predict", headers={"Content-Type": "image/png"},
                               content=sorted((eval_tree / "ok").iterdir())[0].read_bytes())
    assert got.status_code == 500 and got.json() == {
        "error": "internal error (see the service's log)"}
    assert "onnxruntime fell over" not in got.text


def exports_with(bundle: Path, folder: Path, name: str) -> None:
    """``folder/latest.json`` pointing at a copy of ``bundle`` named ``name``."""
    if not (folder / name).exists():
        shutil.copytree(bundle, folder / name)
    atomic.write_json(folder / "latest.json", {"bundle": name})


def test_a_bundle_swaps_under_load_and_a_bad_one_is_refused(bundle: Path, eval_tree: Path,
                                                            tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    exports_with(bundle, exports, "first")
    slot = ModelSlot(lambda: EdgeClassifier(exports))
    follower = Follower(slot, exports)
    app = create_app(slot)
    image = sorted((eval_tree / "scratch").iterdir())[0].read_bytes()
    want = EdgeClassifier(bundle).predict(str(sorted((eval_tree / "scratch").iterdir())[0]))
    failures, answers, stop = [], [], threading.Event()

    def hammer() -> None:
        with TestClient(app, base_url=BASE) as local:
            while not stop.is_set():
                got = local.post("/predict", content=image,
                                 headers={"Content-Type": "image/png"})
                (answers if got.status_code == 200 else failures).append(got.json())

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        exports_with(bundle, exports, "second")
        assert follower.check() is True  # swapped while the requests kept coming
        broken = Path(shutil.copytree(bundle, exports / "broken"))
        (broken / "model.onnx").write_bytes(b"tampered")
        exports_with(bundle, exports, "broken")
        assert follower.check() is False  # refused: the hash does not match
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == [] and len(answers) > 0
    assert all(answer == want for answer in answers)
    model = TestClient(app, base_url=BASE).get("/model").json()
    assert model["bundle"].endswith("second")  # the good new bundle keeps serving
    assert (model["serving"]["swaps"], model["serving"]["refusals"]) == (1, 1)
    assert "model.onnx" in model["serving"]["last_refusal"]["reason"]
    assert "/" not in model["bundle"] and str(exports) not in json.dumps(model)
    json.dumps(model)
