"""Attacks on ``edge serve`` that need no trained model: a fake classifier stands in for the
bundle. A Host header from another site, the pixel budget, /recent across a swap, a follower
meeting an OSError, and a non-loopback --host without a token."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from indvision.edge.cli import main
from indvision.edge.hotswap import Follower, ModelSlot

pytest.importorskip("fastapi", reason="the service is the optional [serve] extra: "
                                      "pip install -e '.[serve]'")
from fastapi.testclient import TestClient

from indvision.edge.service import Limits, create_app

BASE = "http://127.0.0.1"


def fake(size: int, bundle: Path) -> SimpleNamespace:
    """A classifier whose model input is ``size`` px and that has maps."""
    return SimpleNamespace(
        bundle=bundle, meta={"provenance": {"run_id": bundle.name}}, model_file="model.onnx",
        runtime="onnxruntime", signed_by=None, has_maps=True, good_index=0,
        load=lambda rgb: cv2.resize(rgb, (size, size)),
        scores=lambda batch: np.tile([[0.9, 0.1]], (len(batch), 1)),
        scores_and_maps=lambda batch: (np.tile([[0.9, 0.1]], (len(batch), 1)),
                                       np.zeros((len(batch), 4, 4), np.float32)),
        results=lambda probs: [{"label": "ok", "score": 0.9, "scores": {"ok": 0.9}}
                               for _ in probs])


def png(width: int, height: int) -> bytes:
    return cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))[1].tobytes()


def test_a_host_header_from_another_site_gets_400(tmp_path: Path) -> None:
    app = create_app(ModelSlot(lambda: fake(8, tmp_path / "a")))
    assert TestClient(app, base_url=BASE).get("/healthz").status_code == 200
    evil = TestClient(app, base_url="http://evil.example")
    assert evil.get("/healthz").status_code == 400


def test_a_refused_host_gets_json_and_is_counted(tmp_path: Path) -> None:
    app = create_app(ModelSlot(lambda: fake(8, tmp_path / "a")))
    evil = TestClient(app, base_url="http://evil.example")
    for path in ("/healthz", "/predict", "/nowhere"):
        got = evil.get(path)
        assert got.status_code == 400, got.text
        assert got.headers["content-type"] == "application/json"
        assert "evil.example" in got.json()["error"]
    text = TestClient(app, base_url=BASE).get("/metrics").text
    assert 'indvision_requests_total{endpoint="/healthz",status="400"} 1' in text
    assert 'indvision_request_errors_total{endpoint="other"} 1' in text
    assert 'indvision_request_errors_total{endpoint="/predict"} 1' in text


def test_a_request_past_its_pixel_budget_is_refused(tmp_path: Path) -> None:
    limits = Limits(max_body_bytes=10_000_000, max_pixels=1_000_000)
    client = TestClient(create_app(ModelSlot(lambda: fake(8, tmp_path / "a")), limits=limits),
                        base_url=BASE)
    files = [("files", (f"{i}.png", png(1000, 1000), "image/png")) for i in range(64)]
    got = client.post("/predict", files=files)
    assert got.status_code == 413 and "pixels together" in got.json()["error"]
    few = client.post("/predict", files=files[:4])
    assert few.status_code == 200, few.text


def test_recent_after_a_swap_to_another_input_size(tmp_path: Path) -> None:
    models = iter([fake(8, tmp_path / "a"), fake(12, tmp_path / "b")])
    slot = ModelSlot(lambda: next(models))
    client = TestClient(create_app(slot), base_url=BASE)
    headers = {"Content-Type": "image/png"}
    assert client.post("/predict", content=png(20, 20), headers=headers).status_code == 200
    assert slot.reload()[0]
    assert client.post("/predict", content=png(20, 20), headers=headers).status_code == 200
    got = client.get("/recent")
    assert got.status_code == 200 and len(got.json()["decisions"]) == 1


def test_the_follower_outlives_an_oserror_and_retries(tmp_path: Path) -> None:
    (tmp_path / "latest.json").write_text(json.dumps({"bundle": "a"}))
    outcomes = iter([fake(8, tmp_path / "a"), OSError("disk gone mid-copy"),
                     fake(8, tmp_path / "b")])

    def load() -> SimpleNamespace:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    slot = ModelSlot(load)
    follower = Follower(slot, tmp_path, interval=0.01, backoff_min=0.01, backoff_max=0.05)
    (tmp_path / "latest.json").write_text(json.dumps({"bundle": "b"}))
    assert follower.check() is False
    assert "OSError" in follower.state()["last_refusal"]["reason"]
    follower.start()
    try:
        for _ in range(500):
            if slot.swaps:
                break
            follower.join(0.01)
        assert follower.is_alive() and slot.get().bundle.name == "b"
        state = create_app(slot, follower=follower)
        health = TestClient(state, base_url=BASE).get("/healthz").json()["follower"]
        assert health["alive"] and health["swaps"] == 1 and health["refusals"] == 1
        text = TestClient(state, base_url=BASE).get("/metrics").text
        assert "indvision_follower_alive 1" in text
    finally:
        follower.stop()


def test_a_non_loopback_host_without_a_token_is_refused(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--token-file" in err[0]


def test_a_chunked_multipart_body_over_the_limit_gets_413(tmp_path: Path) -> None:
    client = TestClient(create_app(ModelSlot(lambda: fake(8, tmp_path / "a")),
                                   limits=Limits(max_body_bytes=200_000)), base_url=BASE)
    noise = cv2.imencode(".png", np.random.default_rng(0).integers(
        0, 255, (200, 200, 3), dtype=np.uint8))[1].tobytes()  # ~120 kB, 3 of them: ~360 kB
    parts = b"".join(b"--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\""
                     + f"{i}.png".encode() + b"\"\r\nContent-Type: image/png\r\n\r\n" + noise
                     + b"\r\n" for i in range(3)) + b"--B--\r\n"
    chunks = (parts[i:i + 50_000] for i in range(0, len(parts), 50_000))  # no Content-Length
    got = client.post("/predict", content=chunks,
                      headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert got.status_code == 413, got.text


def test_healthz_answers_while_a_request_decodes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import threading
    import time

    import httpx2 as httpx
    import uvicorn

    from indvision import images

    real = images.decode

    def slow(*args: object, **kwargs: object) -> np.ndarray:
        time.sleep(3)
        return real(*args, **kwargs)

    monkeypatch.setattr(images, "decode", slow)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ModelSlot(lambda: fake(8, tmp_path))),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        sender = threading.Thread(target=lambda: httpx.post(
            url + "/predict", content=png(50, 50), headers={"Content-Type": "image/png"},
            timeout=30))
        sender.start()
        time.sleep(0.5)  # the predict is decoding now
        started = time.perf_counter()
        assert httpx.get(url + "/healthz", timeout=30).status_code == 200
        assert time.perf_counter() - started < 1.5  # generous: the decode takes 3 s
        sender.join()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_request_holds_one_full_size_image_at_most(tmp_path: Path) -> None:
    import tracemalloc

    limits = Limits(max_body_bytes=50_000_000, max_pixels=1_000_000,
                    max_request_pixels=10**12)
    client = TestClient(create_app(ModelSlot(lambda: fake(40, tmp_path)), limits=limits),
                        base_url=BASE)
    files = [("files", (f"{i}.png", png(1000, 1000), "image/png")) for i in range(32)]
    tracemalloc.start()
    try:
        assert client.post("/predict", files=files).status_code == 200
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 3_000_000 / 3  # 32 decoded images are 96 MB; one at a time is a few
