"""The pages a person looks at, in a real headless browser (Chromium from the OS packages;
``.ci/run`` installs it when missing): ``edge serve``'s live page and evaluate's
``report.html`` render their tables and images (every embedded image decodes), and log
nothing to the console (a script error, an uncaught rejection or a console.error would:
Chromium's ``--enable-logging`` prints them as CONSOLE lines). Skips, saying why, without
Chromium or the ``[serve]`` extra."""

from __future__ import annotations

import base64
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from indvision.edge import EdgeClassifier
from indvision.edge.hotswap import ModelSlot
from tests.stages.conftest import verified_run  # noqa: F401

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine: "
                                "apt-get install chromium (.ci/run does it when it can)")
TOKEN = "browser-test-token-0123456789"


def render(url: str) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and every console line the browser logged."""
    done = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    return done.stdout, console


def data_images(dom: str) -> list[np.ndarray]:
    """Every ``<img src="data:image/...;base64,...">`` decoded (a broken one is None)."""
    found = re.findall(r'<img[^>]*src="data:image/(?:png|jpeg);base64,([^"]+)"', dom)
    return [cv2.imdecode(np.frombuffer(base64.b64decode(b), np.uint8), cv2.IMREAD_COLOR)
            for b in found]


@pytest.fixture
def live_server(bundle: Path):
    pytest.importorskip("uvicorn", reason="the service is the optional [serve] extra")
    import uvicorn

    from indvision.edge.service import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ModelSlot(lambda: EdgeClassifier(bundle)),
                                                      TOKEN), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_the_live_page_shows_the_model_and_the_last_decisions(live_server: str,
                                                              eval_tree: Path) -> None:
    import httpx2

    sent = sorted((eval_tree / "spot").iterdir())[:3]
    answer = httpx2.post(live_server + "/predict", headers={"Authorization": f"Bearer {TOKEN}"},
                         files=[("files", (p.name, p.read_bytes(), "image/png")) for p in sent])
    assert answer.status_code == 200
    dom, console = render(f"{live_server}/#token={TOKEN}")
    assert console == [], console
    status = re.findall(r"<p id=\"status\">([^<]*)", dom)
    assert "decisions shown" in status[0], status
    assert dom.count("<tr>") >= 8 + len(sent)  # model facts, then one row per decision
    pictures = data_images(dom)
    assert len(pictures) >= len(sent) and all(p is not None and p.size for p in pictures)
    assert all(path.name in dom for path in sent)


def test_the_live_page_says_so_without_the_token(live_server: str) -> None:
    dom, _ = render(live_server + "/")
    assert re.findall(r"<p id=\"status\">([^<]*)", dom) == ["cannot load: /model: HTTP 401"]


def test_the_evaluation_report_renders_its_tables_and_images(
        verified_run: Path) -> None:  # noqa: F811
    dom, console = render((verified_run / "evaluate" / "report.html").as_uri())
    assert console == [], console
    assert dom.count("<table") >= 2
    pictures = data_images(dom)
    assert len(pictures) >= 2 and all(p is not None and p.size for p in pictures)
