"""``edge serve`` under load: latency and throughput against in-process ``predict``, a soak,
a bundle swap under load, and bad requests mixed into good ones.

The service runs as its own process (``python -m indvision.edge serve``, a bearer token,
``--follow`` on a folder whose ``latest.json`` the bench rewrites); closed-loop clients on
127.0.0.1 (each sends its next request when the last is answered) post one image body, so
every good answer must equal ``EdgeClassifier.predict`` on that image.

    python bench/serve.py exports/defect ../shared/data/casting/def_front/cast_def_0_0.jpeg
    python bench/serve.py exports/defect IMAGE --soak 20000

1. ``load``: 1, 4 and 16 clients for ``--seconds`` each: p50/p99 latency, requests/s, errors,
   against in-process ``EdgeClassifier.predict`` on the same bytes (p50 ratio).
2. ``soak``: ``--soak`` requests from 4 clients; the service's RSS before and after.
3. ``swap``: 4 clients while ``latest.json`` is pointed at another copy of the bundle and back;
   failed requests and swaps counted.
4. ``mixed``: 4 good clients beside clients sending malformed bodies, oversized bodies, wrong
   tokens and a slow upload; the good answers must all equal the expected one.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("load", "soak", "swap", "mixed")
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import load_avg  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Service:
    """The service in its own process, following ``folder/latest.json``."""

    def __init__(self, folder: Path, port: int, token_file: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "indvision.edge", "serve", str(folder), "--port", str(port),
             "--token-file", str(token_file), "--follow", "--follow-interval", "0.5",
             "--max-body-mb", "5"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        import httpx2

        for _ in range(200):
            try:
                if httpx2.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                time.sleep(0.1)
        raise SystemExit("the service did not come up")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def closed_loop(clients: int, stop: Callable[[int], bool], send: Callable[[Any], Any],
                check: Callable[[Any], bool]) -> dict[str, Any]:
    """``clients`` threads, each sending its next request when the last is answered, until
    ``stop(requests so far)``; latency of the good answers, errors, wrong answers."""
    import httpx2

    latencies: list[float] = []
    errors, wrong, count = [0], [0], [0]
    lock = threading.Lock()

    def client() -> None:
        with httpx2.Client(timeout=30) as session:
            while True:
                with lock:
                    if stop(count[0]):
                        return
                    count[0] += 1
                started = time.perf_counter()
                try:
                    response = send(session)
                    ok = response.status_code == 200
                except httpx2.HTTPError:
                    ok, response = False, None
                seconds = time.perf_counter() - started
                with lock:
                    if not ok:
                        errors[0] += 1
                    elif not check(response):
                        wrong[0] += 1
                    else:
                        latencies.append(seconds)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"n": count[0], "errors": errors[0], "wrong": wrong[0], "wall": wall,
            "p50": percentile(latencies, 0.5) * 1e3 if latencies else float("nan"),
            "p99": percentile(latencies, 0.99) * 1e3 if latencies else float("nan"),
            "rps": len(latencies) / wall}


def bad_senders(url: str, token: str, image: bytes) -> list[Callable[[Any], Any]]:
    """Malformed, oversized, wrong-token and slow requests."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"}

    def slow_body():
        for start in range(0, len(image), 1024):
            time.sleep(0.05)
            yield image[start:start + 1024]

    return [lambda s: s.post(url, content=b"\x89PNG garbage", headers=headers),
            lambda s: s.post(url, content=b"x" * 6_000_000, headers=headers),
            lambda s: s.post(url, content=image, headers={**headers,
                                                          "Authorization": "Bearer wrong"}),
            lambda s: s.post(url, content=slow_body(), headers=headers)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="bundle, run or exports/<pipeline> folder")
    parser.add_argument("image", help="the image every request posts")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--soak", type=int, default=20000)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS,
                        help="which measurements to run (default: all)")
    args = parser.parse_args()


    from indvision import images
    from indvision.edge import EdgeClassifier
    from indvision.edge.runtime import resolve_bundle

    bundle = resolve_bundle(args.bundle)
    image = Path(args.image).read_bytes()
    expected = EdgeClassifier(bundle).predict(args.image)
    work = Path(tempfile.mkdtemp(prefix="indvision-serve-"))
    for name in ("a", "b"):
        shutil.copytree(bundle, work / name, ignore=shutil.ignore_patterns("*.tflite"))
    (work / "latest.json").write_text('{"bundle": "a"}')
    token = secrets.token_urlsafe(24)
    (work / "token").write_text(token)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"}

    classifier = EdgeClassifier(work / "a")
    local = []
    for _ in range(300):
        started = time.perf_counter()
        classifier.predict(images.decode(image))
        local.append(time.perf_counter() - started)
    local_p50 = percentile(local, 0.5) * 1e3

    service = Service(work, args.port, work / "token")
    url = service.url + "/predict"

    def good(session: Any) -> Any:
        return session.post(url, content=image, headers=headers)

    def right(response: Any) -> bool:
        return response.json() == expected

    try:
        print(f"bundle {bundle}, image {args.image} ({len(image) / 1e3:.1f} kB); {load_avg()}")
        print(f"in-process EdgeClassifier.predict (decode + predict): p50 {local_p50:.2f} ms")
        if "load" in args.parts:
            load_table(local_p50, good, right, args.seconds)
        if "soak" in args.parts:
            soak(service, good, right, args.soak)
        if "swap" in args.parts:
            swap(service, work, token, good, right)
        if "mixed" in args.parts:
            mixed(url, token, image, good, right, args.seconds)
    finally:
        service.stop()
        shutil.rmtree(work, ignore_errors=True)


def load_table(local_p50: float, good: Callable, right: Callable, seconds: float) -> None:
    """1, 4 and 16 closed-loop clients for ``seconds`` each."""
    print("\n| clients | requests | req/s | p50 ms | p99 ms | p50 vs in-process | errors "
          "| wrong |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    for clients in (1, 4, 16):
        until = time.perf_counter() + seconds
        row = closed_loop(clients, lambda _n, t=until: time.perf_counter() > t, good, right)
        print(f"| {clients} | {row['n']} | {row['rps']:.0f} | {row['p50']:.2f} | "
              f"{row['p99']:.2f} | {row['p50'] / local_p50:.2f} | {row['errors']} | "
              f"{row['wrong']} |", flush=True)


def soak(service: Service, good: Callable, right: Callable, requests: int) -> None:
    before = service.rss_mb()
    row = closed_loop(4, lambda n: n >= requests, good, right)
    print(f"\nsoak: {row['n']} requests from 4 clients in {row['wall']:.0f} s, "
          f"{row['errors']} errors, {row['wrong']} wrong; service RSS {before:.0f} -> "
          f"{service.rss_mb():.0f} MB", flush=True)


def swap(service: Service, work: Path, token: str, good: Callable, right: Callable) -> None:
    """4 clients while latest.json moves between two copies of the bundle, 4 times."""
    import httpx2

    stop = threading.Event()

    def swapper() -> None:
        for target in ("b", "a", "b", "a"):
            time.sleep(1.0)
            (work / "latest.json.tmp").write_text(f'{{"bundle": "{target}"}}')
            os.replace(work / "latest.json.tmp", work / "latest.json")
        time.sleep(1.5)
        stop.set()

    thread = threading.Thread(target=swapper)
    thread.start()
    row = closed_loop(4, lambda _n: stop.is_set(), good, right)
    thread.join()
    model = httpx2.get(service.url + "/model",
                       headers={"Authorization": f"Bearer {token}"}).json()
    print(f"swap under load: {row['n']} requests while latest.json moved 4 times, "
          f"{row['errors']} failed, {row['wrong']} wrong; swaps {model['serving']['swaps']}, "
          f"refused {model['serving']['refusals']}", flush=True)


def mixed(url: str, token: str, image: bytes, good: Callable, right: Callable,
          seconds: float) -> None:
    """4 good clients beside malformed, oversized, wrong-token and slow ones."""
    import httpx2

    until = time.perf_counter() + seconds
    bad_results: list[str] = []

    def bad_loop(send: Callable[[Any], Any]) -> None:
        with httpx2.Client(timeout=30) as session:
            while time.perf_counter() < until:
                try:
                    bad_results.append(str(send(session).status_code))
                except httpx2.HTTPError as exc:
                    bad_results.append(type(exc).__name__)

    threads = [threading.Thread(target=bad_loop, args=(send,))
               for send in bad_senders(url, token, image)]
    for thread in threads:
        thread.start()
    row = closed_loop(4, lambda _n: time.perf_counter() > until, good, right)
    for thread in threads:
        thread.join()
    statuses = {status: bad_results.count(status) for status in sorted(set(bad_results))}
    print(f"mixed: {row['n']} good requests beside {len(bad_results)} bad ones (answers "
          f"{statuses}; the slow upload's image is valid: 200): {row['errors']} good ones "
          f"failed, {row['wrong']} wrong; p50 {row['p50']:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
