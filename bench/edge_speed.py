"""Edge inference speed: every way to run the defect model, on the same images, side by side.

For one bundle (a bundle folder, a run folder or ``exports/<pipeline>``) it times single-image
latency (p50/p95) and batch-32 throughput of: Keras ``model.predict``, a direct Keras call,
a ``tf.function``-compiled call (plain and XLA; the faster is "the compiled Keras call"),
onnxruntime with default options and tuned, the edge runner (:func:`indvision.formats.
load_runner`, what :class:`indvision.edge.EdgeClassifier` runs), OpenCV's ``cv2.dnn`` on
model.onnx (``runtime="opencv"``), TFLite float32 and int8 (ai-edge-litert), and an int8
ONNX made here with onnxruntime static quantisation (shown only if it keeps >= 99 % top-1
agreement with Keras on the test images).

The machine is shared, so contenders are interleaved (round-robin, several rounds) and
medians reported, with the load average printed beside them: compare ratios within one run,
not absolute figures across runs. It also counts the model's FLOPs from the ONNX graph and
measures the machine's float32 matmul rate (numpy) in the same run, and ends with the goal
checks (single-image edge latency >= 20x faster than Keras predict and >= 5x faster than the
compiled call; batch-32 throughput >= 40 % of the matmul rate) and the end-to-end edge time
(decode + resize + model) against model-only.

    python bench/edge_speed.py                       # exports/defect (latest passing run)
    python bench/edge_speed.py exports/defect/<run_id>/bundle --rounds 8
    python bench/edge_speed.py --no-keras --no-int8-onnx    # edge-only numbers, no TensorFlow

Exits 0 whether goals are met or missed (misses are reported). Needs the ``[train]`` extras
for the Keras rows and int8 ONNX (skipped with a note when absent).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a clean clone without an install works too

from benchlib import load_avg  # noqa: E402
from indvision import edge, formats, images, models  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BATCH = 32

# ----------------------------------------------------------------------------- helpers


@dataclass
class Contender:
    """One way to run the model: ``run(uint8 batch) -> probabilities``."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    note: str = ""
    single: list[float] = field(default_factory=list)  # seconds per 1-image call
    batch: list[float] = field(default_factory=list)  # seconds per 32-image call

    def p(self, q: float) -> float:
        return float(np.percentile(self.single, q)) if self.single else float("nan")

    def round_medians(self, singles: int) -> np.ndarray:
        """Median 1-image latency of each round (the timed calls come ``singles`` a round)."""
        return np.median(np.reshape(self.single, (-1, singles)), axis=1)

    @property
    def throughput(self) -> float:
        return BATCH / float(np.median(self.batch)) if self.batch else float("nan")


def run_images(bundle: Path, split: str, limit: int) -> list[str]:
    """Image paths of the run's ``split`` (ingest/splits.csv next to the bundle), if any."""
    splits = bundle.parent / "ingest" / "splits.csv"
    if not splits.is_file():
        return []
    with open(splits, encoding="utf-8", newline="") as handle:
        paths = [r["path"] for r in csv.DictReader(handle) if r["split"] == split]
    return [p for p in paths if Path(p).is_file()][:limit]


def pixel_batch(paths: list[str], spec: images.InputSpec, n: int, seed: int) -> np.ndarray:
    """Model input for ``paths`` (or ``n`` synthetic images when there are none)."""
    if paths:
        return np.stack([images.load(p, spec) for p in paths])
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, spec.height, spec.width, 3), dtype=np.uint8)


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """The machine's float32 matmul rate (numpy/BLAS, all threads), median of ``reps``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * n**3 / float(np.median(times)) / 1e9


def onnx_flops(path: Path) -> float | None:
    """FLOPs per image: 2 x MACs of every Conv, Gemm and MatMul (shape-inferred, batch 1)."""
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError:
        return None
    model = onnx.load(str(path))
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    macs = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        if not out or 0 in out:
            continue
        if node.op_type == "Conv":
            weight = shapes[node.input[1]]  # Cout, Cin/group, kh, kw
            macs += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            if not a:
                continue
            transposed = any(att.name == "transA" and att.i for att in node.attribute)
            k = a[-2] if transposed else a[-1]
            macs += int(np.prod(out)) * k
    return 2.0 * macs


# ----------------------------------------------------------------------------- contenders


def ort_session(path: Path, tuned: bool, threads: int | None) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if tuned:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        # busy-waiting workers steal the CPU from the thread doing the work when the cores
        # are shared (or busy with decoding): off
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def ort_runner(session: object) -> Callable[[np.ndarray], np.ndarray]:
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch.astype(np.float32)})[0]

    return run


def ort_iobinding_runner(session: object) -> Callable[[np.ndarray], np.ndarray]:
    """IO binding: input bound in place, output allocated by onnxruntime on the CPU."""
    name = session.get_inputs()[0].name
    output = session.get_outputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        binding = session.io_binding()
        binding.bind_cpu_input(name, np.ascontiguousarray(batch, dtype=np.float32))
        binding.bind_output(output, "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    return run


def opencv_contenders(onnx_path: Path) -> list[Contender]:
    """model.onnx on its second runtime, OpenCV's ``cv2.dnn`` (a device without onnxruntime);
    none, with a note, where OpenCV cannot load the file."""
    try:
        runner = formats.load_runner(onnx_path, runtime="opencv")
    except Exception as exc:
        print(f"  (OpenCV row skipped: {exc})", flush=True)
        return []
    return [Contender("OpenCV cv2.dnn (edge runner)", runner,
                      "EdgeClassifier(..., runtime='opencv')")]


def keras_contenders(model_path: Path, spec: images.InputSpec) -> list[Contender]:
    import tensorflow as tf

    model = models.load_model(model_path)
    signature = [tf.TensorSpec([None, spec.height, spec.width, 3], tf.float32)]
    compiled = tf.function(lambda x: model(x, training=False), input_signature=signature)
    xla = tf.function(lambda x: model(x, training=False), input_signature=signature,
                      jit_compile=True)

    def predict(batch: np.ndarray) -> np.ndarray:
        return model.predict(batch.astype(np.float32), verbose=0, batch_size=BATCH)

    def direct(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(batch.astype(np.float32), training=False))

    def call(function: Callable) -> Callable[[np.ndarray], np.ndarray]:
        return lambda batch: function(tf.constant(batch.astype(np.float32))).numpy()

    contenders = [Contender("keras model.predict", predict),
                  Contender("keras model(x, training=False)", direct),
                  Contender("keras tf.function", call(compiled))]
    try:
        call(xla)(np.zeros((1, spec.height, spec.width, 3), np.uint8))
        contenders.append(Contender("keras tf.function XLA", call(xla)))
    except Exception as exc:  # XLA is optional in some TensorFlow builds
        print(f"  (XLA skipped: {str(exc).splitlines()[0][:80]})", flush=True)
    return contenders


class Calibration:
    """onnxruntime CalibrationDataReader over train images (float32 0..255)."""

    def __init__(self, name: str, pixels: np.ndarray) -> None:
        self.items = iter([{name: image[None].astype(np.float32)} for image in pixels])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def cpu_has_vnni() -> bool:
    """AVX-512 VNNI / AVX-VNNI: u8 x s8 dot products without the 16-bit saturation that makes
    onnxruntime recommend ``reduce_range`` (7-bit weights) on plain AVX2."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def quantize_onnx(prepared: Path, calibration: np.ndarray, target: Path,
                  reduce_range: bool) -> Path:
    """Static int8 quantisation of a ``quant_pre_process``-ed model (QDQ, per channel)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    session = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    quantize_static(str(prepared), str(target), Calibration(name, calibration),
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return target


# ----------------------------------------------------------------------------- timing


def time_contenders(contenders: list[Contender], pixels: np.ndarray, rounds: int,
                    singles: int) -> list[float]:
    """Round-robin: every round each contender runs ``singles`` 1-image calls and one
    32-image call; the order rotates so no contender always follows the same neighbour.
    Each round also measures the matmul rate (returned, GFLOP/s per round), so the model's
    throughput is compared with the machine as loaded at the same time."""
    batch = np.ascontiguousarray(np.resize(pixels, (BATCH, *pixels.shape[1:])))
    for contender in contenders:  # warm-up: first calls trace, allocate, compile
        for index in range(3):
            contender.run(pixels[index % len(pixels)][None])
        contender.run(batch)
    matmul: list[float] = []
    for round_index in range(rounds):
        shift = round_index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            for index in range(singles):
                image = pixels[(round_index * singles + index) % len(pixels)][None]
                started = time.perf_counter()
                contender.run(image)
                contender.single.append(time.perf_counter() - started)
            started = time.perf_counter()
            contender.run(batch)
            contender.batch.append(time.perf_counter() - started)
        matmul.append(matmul_gflops(reps=3))
        print(f"  round {round_index + 1}/{rounds} ({load_avg()})", flush=True)
    return matmul


def agreement(probs: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, 1) == np.argmax(reference, 1)))


def predict_all(run: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([run(pixels[i:i + BATCH]) for i in range(0, len(pixels), BATCH)])


def paired_ratio(slow: Contender, fast: Contender, singles: int) -> float:
    """Median over rounds of slow/fast round medians: both measured under the same load."""
    return float(np.median(slow.round_medians(singles) / fast.round_medians(singles)))


def verdict(value: float, goal: float, unit: str) -> str:
    if value >= goal:
        return f"MET ({value:.1f}{unit} >= {goal:g}{unit})"
    return f"MISSED by {goal - value:.1f}{unit} ({value:.1f}{unit} < {goal:g}{unit})"


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", nargs="?", default=str(ROOT / "exports" / "defect"),
                        help="bundle folder, run folder or exports/<pipeline> "
                             "(default: exports/defect)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (6)")
    parser.add_argument("--singles", type=int, default=8,
                        help="1-image calls per contender per round (8)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of the tuned runners (default: all CPUs)")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras rows")
    parser.add_argument("--no-int8-onnx", action="store_true", help="skip int8 ONNX")
    parser.add_argument("--calibration", type=int, default=100,
                        help="train images calibrating the int8 ONNX (100)")
    args = parser.parse_args(argv)

    try:
        bundle = edge.resolve_bundle(args.bundle)
    except Exception as exc:
        print(f"error: {exc}\n(make one: python -m indvision.pipeline defect)", file=sys.stderr)
        return 0
    meta = formats.read_model_json(bundle)
    spec = images.InputSpec.from_dict(meta["input_spec"])
    onnx_path = bundle / "model.onnx"
    test_paths = run_images(bundle, "test", 10_000)
    pixels = pixel_batch(test_paths, spec, 64, seed=1)
    print(f"bundle {bundle}\ninput {spec.width}x{spec.height}, {len(meta['classes'])} classes, "
          f"{len(pixels)} {'test' if test_paths else 'synthetic'} images; {load_avg()}",
          flush=True)

    flops = onnx_flops(onnx_path)
    contenders: list[Contender] = []
    keras_probs = None
    keras_path = bundle.parent / "train" / "model.keras"
    if not args.no_keras and keras_path.is_file():
        try:
            contenders += keras_contenders(keras_path, spec)
            keras_probs = predict_all(contenders[2].run, pixels)
        except ImportError as exc:
            print(f"  (Keras rows skipped: {exc})", flush=True)

    default_session = ort_session(onnx_path, tuned=False, threads=None)
    tuned_session = ort_session(onnx_path, tuned=True, threads=args.threads)
    contenders += [
        Contender("onnxruntime default session", ort_runner(default_session),
                  "onnxruntime's own defaults"),
        Contender("onnxruntime tuned", ort_runner(tuned_session),
                  f"{tuned_session.get_session_options().intra_op_num_threads} threads, "
                  "no spinning, ENABLE_ALL"),
        Contender("onnxruntime tuned + IO binding", ort_iobinding_runner(tuned_session)),
        Contender("edge runner (model.onnx)", formats.load_runner(onnx_path),
                  "what EdgeClassifier runs"),
        Contender("edge runner, spin_wait=False", formats.load_runner(onnx_path, spin_wait=False),
                  "EdgeClassifier(..., spin_wait=False): for shared CPUs"),
    ]
    contenders += opencv_contenders(onnx_path)
    for filename, label in (("model.tflite", "TFLite float32"),
                            ("model_int8.tflite", "TFLite int8")):
        if (bundle / filename).is_file():
            try:
                contenders.append(Contender(f"{label} (edge runner)",
                                            formats.load_runner(bundle / filename)))
            except Exception as exc:
                print(f"  ({label} skipped: {exc})", flush=True)

    workdir = tempfile.TemporaryDirectory(prefix="indvision-bench-")
    int8_note = "skipped (--no-int8-onnx)"
    if not args.no_int8_onnx:
        try:
            train_paths = run_images(bundle, "train", args.calibration)
            calibration = pixel_batch(train_paths, spec, args.calibration, seed=2)
            started = time.perf_counter()
            from onnxruntime.quantization.shape_inference import quant_pre_process

            vnni = cpu_has_vnni()
            print(f"quantising model.onnx to int8 (calibration: {len(calibration)} "
                  f"{'train' if train_paths else 'synthetic'} images; CPU "
                  f"{'has' if vnni else 'lacks'} VNNI) ...", flush=True)
            prepared = Path(workdir.name) / "model_pre.onnx"
            quant_pre_process(str(onnx_path), str(prepared))
            reference = (keras_probs if keras_probs is not None
                         else predict_all(ort_runner(default_session), pixels))
            against = "Keras" if keras_probs is not None else "float ONNX"
            notes, chosen = [], None
            # reduce_range (7-bit weights) is onnxruntime's advice for AVX2 without VNNI;
            # both are tried and reported, the CPU's own setting first
            for reduce_range in ((False, True) if vnni else (True, False)):
                target = Path(workdir.name) / f"model_int8_rr{int(reduce_range)}.onnx"
                quantize_onnx(prepared, calibration, target, reduce_range)
                run = ort_runner(ort_session(target, tuned=True, threads=args.threads))
                agree = agreement(predict_all(run, pixels), reference)
                notes.append(f"reduce_range={reduce_range}: {agree:.2%}")
                if agree >= 0.99 and chosen is None:
                    chosen = (reduce_range, agree, run)
            int8_note = (f"top-1 agreement vs {against} on {len(pixels)} images: "
                         + ", ".join(notes)
                         + f" (quantised in {time.perf_counter() - started:.0f} s)")
            if chosen:
                contenders.append(Contender("onnxruntime int8 (static QDQ)", chosen[2],
                                            f"reduce_range={chosen[0]}, agreement "
                                            f"{chosen[1]:.0%}"))
            else:
                int8_note += " (< 99 %: not included)"
        except Exception as exc:
            int8_note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    print(f"int8 ONNX: {int8_note}", flush=True)

    if keras_probs is not None:
        for contender in [c for c in contenders if not c.name.startswith("keras")]:
            found = agreement(predict_all(contender.run, pixels), keras_probs)
            contender.note = (contender.note + "; " if contender.note else "") + \
                f"top-1 vs Keras {found:.0%}"

    print(f"timing {len(contenders)} contenders, {args.rounds} interleaved rounds ...",
          flush=True)
    matmul_rounds = time_contenders(contenders, pixels, args.rounds, args.singles)
    matmul = float(np.median(matmul_rounds))

    # -------------------------------------------------------------------- report
    by_name = {c.name: c for c in contenders}
    predict = by_name.get("keras model.predict")
    compiled = min((c for c in contenders if c.name.startswith("keras tf.function")),
                   key=lambda c: c.p(50), default=None)
    print(f"\nmachine: {load_avg()}; numpy float32 matmul 2048^2: {matmul:.1f} GFLOP/s "
          f"(median of one per round; min {min(matmul_rounds):.1f}, max {max(matmul_rounds):.1f})")
    if flops:
        print(f"model: {flops / 1e9:.3f} GFLOP per image (2 x Conv/Gemm/MatMul MACs, ONNX)")
    header = (f"{'runner':34s} {'p50 ms':>8s} {'p95 ms':>8s} {'b32 img/s':>10s} "
              f"{'GFLOP/s':>8s} {'%matmul':>8s} {'vs predict':>10s} {'vs compiled':>11s}  note")
    print(header + "\n" + "-" * len(header))
    for c in contenders:
        gflops = flops * c.throughput / 1e9 if flops else float("nan")
        ratio_predict = predict.p(50) / c.p(50) if predict else float("nan")
        ratio_compiled = compiled.p(50) / c.p(50) if compiled else float("nan")
        print(f"{c.name:34s} {1e3 * c.p(50):8.2f} {1e3 * c.p(95):8.2f} {c.throughput:10.1f} "
              f"{gflops:8.2f} {100 * gflops / matmul:7.1f}% {ratio_predict:9.1f}x "
              f"{ratio_compiled:10.1f}x  {c.note}")
    print("(GFLOP/s: the model's float32 FLOPs x batch-32 images/s; int8 rows can pass 100 % "
          "of the float32 matmul rate. Ratios: p50 against p50 of this run.)")
    if compiled:
        print(f"(compiled Keras call = {compiled.name})")

    # end-to-end on the edge: decode + resize + model, per image, one at a time
    classifier = edge.EdgeClassifier(bundle, allow_unshippable=True)
    e2e, decode_times, model_times = [], [], []
    sample = test_paths[:40]
    if not sample:
        sample_dir = Path(workdir.name) / "images"
        sample_dir.mkdir()
        import cv2

        for index, image in enumerate(pixels[:40]):
            sample.append(str(sample_dir / f"{index}.png"))
            cv2.imwrite(sample[-1], image[:, :, ::-1])
    for path in sample * 2:
        started = time.perf_counter()
        classifier.predict(path)
        e2e.append(time.perf_counter() - started)
        started = time.perf_counter()
        loaded = classifier.load(path)
        decode_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        classifier.scores(loaded[None])
        model_times.append(time.perf_counter() - started)
    e2e_ms, decode_ms, model_ms = (1e3 * float(np.median(t))
                                   for t in (e2e, decode_times, model_times))
    print(f"\nedge end-to-end (EdgeClassifier.predict(path), {len(sample)} files x 2): "
          f"p50 {e2e_ms:.2f} ms = decode+resize {decode_ms:.2f} ms + model {model_ms:.2f} ms "
          f"+ other {max(0.0, e2e_ms - decode_ms - model_ms):.2f} ms")

    edge_row = by_name["edge runner (model.onnx)"]
    print("\ngoals (edge runner, model.onnx, the bundle's default):")
    print("  (latency ratios: median over rounds of the two rows' round medians, paired)")
    rows = [edge_row] + [c for c in contenders if c.name.startswith(("TFLite int8",
                                                                      "onnxruntime int8"))]
    for row in rows:
        if predict:
            print(f"  single-image latency vs Keras predict >= 20x ({row.name}): "
                  + verdict(paired_ratio(predict, row, args.singles), 20, "x"))
        if compiled:
            print(f"  single-image latency vs compiled Keras call >= 5x ({row.name}): "
                  + verdict(paired_ratio(compiled, row, args.singles), 5, "x"))
    if flops:
        best = max(contenders, key=lambda c: c.throughput)
        for row in [edge_row] + ([best] if best is not edge_row else []):  # int8: >100 % ok
            share = 100 * flops * row.throughput / 1e9 / matmul
            print(f"  batch-32 throughput >= 40 % of matmul rate ({row.name}): "
                  + verdict(share, 40, " %"))
    print(f"\n{load_avg()} (at the end)")
    workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
