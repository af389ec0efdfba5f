"""Model benchmark: worker and orchestrator on tiny synthetic detectors, and on YOLOX-Nano for real.

Every benchmark_models call spawns one Python process per variant (~1 s each here), so the runs
are few and small: the tiny-model run checks most things at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from visionpipe.evaluation import evaluate_coco
from visionpipe.optimize import _benchmark_worker as worker
from visionpipe.optimize import benchmark
from visionpipe.optimize.benchmark import (
    BatchLatency,
    BenchmarkConfig,
    BenchmarkError,
    BenchmarkReport,
    BenchmarkRow,
    benchmark_models,
    model_size_bytes,
)
from visionpipe.pipeline import Pipeline

HW = 32
NUM_CLASSES = 60  # 4 box rows + 60 classes = 64 channels
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_detector(path: Path, batch: int | str = 1, external_data: bool = False) -> Path:
    """Conv(3->64) + Relu + Conv(64->64) reshaped to the YOLOv8 layout (batch, 4+60, 32*32), with
    Ultralytics metadata so it loads without a family; ``batch`` fixed (1) or symbolic ("batch")."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (64, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 64).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.05, (64, 64, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, 64).astype(np.float32), "b2"),
        numpy_helper.from_array(np.array([-1, 64, HW * HW], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c2", "shape"], ["output0"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, HW, HW])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 64, HW * HW])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            "names": str({i: f"class{i}" for i in range(NUM_CLASSES)}),
            "task": "detect",
            "imgsz": f"[{HW}, {HW}]",
            "stride": "32",
        },
    )
    onnx.checker.check_model(model)
    if external_data:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def write_dataset(folder: Path, count: int, seed: int = 1) -> tuple[list[Path], Path]:
    """Blurred-noise images and a COCO json with two boxes per image in the tiny model's classes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths, images, annotations = [], [], []
    for i in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (7, 7), 0)
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
        images.append({"id": i + 1, "file_name": path.name, "width": 64, "height": 48})
        for _ in range(2):
            x, y = float(rng.integers(0, 32)), float(rng.integers(0, 24))
            w, h = float(rng.integers(8, 32)), float(rng.integers(8, 24))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.integers(0, 4)) + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c + 1, "name": f"class{c}"} for c in range(NUM_CLASSES)]
    gt = folder / "gt.json"
    gt.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}), encoding="utf-8"
    )
    return paths, gt


def independent_map(model: str | Path, images: list, annotations: Path, **load) -> tuple[float, float]:
    """mAP computed in this process through Pipeline + pycocotools, as `visionpipe eval` does."""
    with Pipeline(model, conf=0.01, **load) as pipe:
        results = pipe.run([str(p) for p in images], batch_size=1)
        evaluation = evaluate_coco(results, annotations, pipe.class_names)
    return evaluation.map_50_95, evaluation.map_50


def check_latencies(row: BenchmarkRow, batch_sizes: tuple[int, ...], repeats: int) -> None:
    assert [lat.batch for lat in row.latency] == list(batch_sizes)
    for lat in row.latency:
        assert 0 < lat.min_ms <= lat.p50_ms <= lat.p95_ms <= lat.p99_ms <= lat.max_ms, lat
        assert lat.runs == repeats
        assert lat.throughput == pytest.approx(lat.batch / (lat.mean_ms / 1000.0))


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def table_rows(markdown: str) -> list[str]:
    """The body rows of the Markdown table (after the header and its separator)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return lines[2:]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    fixed = tiny_detector(root / "tiny_fixed.onnx", batch=1)
    dynamic = tiny_detector(root / "tiny_dynamic.onnx", batch="batch")
    images, gt = write_dataset(root / "data", 4)
    return fixed, dynamic, images, gt


# ------------------------------------------------------------------------------ tiny, processes


def test_tiny_benchmark_fixed_dynamic_and_broken(tiny, tmp_path):
    fixed, dynamic, images, gt = tiny
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model \x00\xff" * 10)
    config = BenchmarkConfig(images=images, annotations=gt, batch_sizes=(2, 1), warmup=1, repeats=3)
    assert config.batch_sizes == (1, 2)
    seen = []
    report = benchmark_models([fixed, dynamic, broken], config, progress=False, on_row=seen.append)

    assert [r.name for r in report.rows] == ["tiny_fixed", "tiny_dynamic", "broken"]
    assert seen == report.rows
    first, second, bad = report.rows
    for row, path in ((first, fixed), (second, dynamic)):
        assert row.ok, row.error
        assert row.size_bytes == os.path.getsize(path)
        assert row.model_path == str(path) and row.family == "yolov8" and row.input_hw == (HW, HW)
        assert row.providers == ["CPUExecutionProvider"]
        check_latencies(row, (1, 2), repeats=3)
        assert row.load_ms > 0 and row.wall_s > 0 and row.timing_images == 4
        assert 0 < row.baseline_mb <= row.peak_timing_mb <= row.peak_mb
        # the benchmark's mAP is what Pipeline + pycocotools give in this process
        assert row.map_images == 4 and row.map_detections > 0 and row.failed_images == []
        assert (row.map_50_95, row.map_50) == pytest.approx(independent_map(path, images, gt), abs=1e-12)
    # a fixed batch axis: batch 2 is two runs of 1, and the report says so
    assert first.fixed_batch is True and first.model_batch == 1
    assert [lat.calls_per_batch for lat in first.latency] == [1, 2]
    assert second.fixed_batch is False and second.model_batch is None
    assert [lat.calls_per_batch for lat in second.latency] == [1, 1]

    # the broken file is a failed row; the good ones still have their numbers
    assert not bad.ok and "ModelLoadError" in bad.error and "cannot load model" in bad.error
    assert bad.latency == [] and bad.map_50_95 is None and bad.load_ms is None
    assert bad.size_bytes == os.path.getsize(broken)

    # ratios against the first model
    assert report.size_ratio(first) == 1.0 and report.speedup(first, 1) == 1.0 and report.map_drop(first) == 0.0
    assert report.speedup(second, 2) == pytest.approx(first.latency_at(2).p50_ms / second.latency_at(2).p50_ms)
    assert report.speedup(bad, 1) is None and report.map_drop(bad) is None

    paths = report.write(tmp_path / "out")
    assert BenchmarkReport.from_json(paths["json"]) == report
    raw = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert raw["rows"][1]["relative"]["speedup_batch2"] == pytest.approx(report.speedup(second, 2))
    assert raw["environment"]["onnxruntime"] and raw["environment"]["cpu"]

    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert markdown == report.to_markdown()
    rows = table_rows(markdown)
    assert len(rows) == 3
    assert rows[0].startswith("| tiny_fixed ¹ |") and rows[2].startswith("| broken ² |")
    assert "tiny_fixed runs a batch of 2 as 2 runs of 1" in markdown
    assert "broken failed" in markdown and "cannot load model" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("|"))
    assert all(len(r.split(" | ")) == len(header.split(" | ")) for r in rows)
    check_png(paths["png"])


def test_rounds_interleave_and_report_the_median_pass(tiny, tmp_path):
    fixed, dynamic, images, gt = tiny
    config = BenchmarkConfig(images=images, annotations=gt, batch_sizes=(1, 2), warmup=1, repeats=3, rounds=3)
    order: list[str] = []
    report = benchmark_models([fixed, dynamic], config, progress=False, on_row=lambda row: order.append(row.name))
    assert order == ["tiny_fixed", "tiny_dynamic"]  # each reported once, after the last pass
    for row, path in zip(report.rows, (fixed, dynamic)):
        assert row.ok, row.error
        for lat in row.latency:
            p50s = row.round_p50_ms[str(lat.batch)]
            assert len(p50s) == 3 and lat.p50_ms == sorted(p50s)[1]  # the median pass, whole
        check_latencies(row, (1, 2), repeats=3)
        # mAP comes from the first pass (later passes only time)
        assert (row.map_50_95, row.map_50) == pytest.approx(independent_map(path, images, gt), abs=1e-12)
    assert "median-p50 pass of 3 interleaved passes" in report.to_markdown()
    assert BenchmarkReport.from_json(report.to_json(tmp_path / "r.json")) == report


def test_hanging_worker_hits_the_timeout_and_the_next_variant_still_runs(tiny, tmp_path, monkeypatch):
    fixed, _, images, _ = tiny
    # A decoder plugin whose import never returns, as a stuck mount would (a FIFO spec, which this
    # test used before, is now refused by name before anything reads it).
    (tmp_path / "stuck_decoder.py").write_text("import time\ntime.sleep(3600)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    stuck = tmp_path / "stuck.yaml"
    stuck.write_text(f"model: {Path(fixed).resolve()}\ndecoder: {{class: 'stuck_decoder:Stuck'}}\n")
    config = BenchmarkConfig(images=images[:2], batch_sizes=(1,), warmup=1, repeats=2, timeout=6)
    start = time.perf_counter()
    report = benchmark_models([stuck, fixed], config, progress=False)
    elapsed = time.perf_counter() - start

    hung, good = report.rows
    assert hung.error.startswith("timed out after 6 s"), hung.error
    assert "during load" in hung.error  # the worker got as far as loading the model
    assert hung.latency == [] and 6 <= hung.wall_s < 12
    assert good.ok and good.latency_at(1).runs == 2 and good.map_50_95 is None
    assert elapsed < 30
    # without annotations the plot shows latency bars; the failed baseline makes ratios blank
    assert report.size_ratio(good) is None and report.speedup(good, 1) is None
    report.plot(tmp_path / "bars.png")
    check_png(tmp_path / "bars.png")
    assert len(table_rows(report.to_markdown())) == 2


# ------------------------------------------------------------------------------ worker in process


def run_worker_here(tmp_path: Path, source, config: BenchmarkConfig, name: str = "m") -> tuple[int, dict]:
    job = tmp_path / "job.json"
    out = tmp_path / "result.json"
    job.write_text(
        json.dumps({"name": name, "label": str(source), "source": {"path": str(source)}, "config": config.to_dict()})
    )
    code = worker.main([str(job), str(out)])
    return code, json.loads(out.read_text(encoding="utf-8"))


def test_worker_keeps_measurements_when_map_fails(tiny, tmp_path):
    fixed, _, images, gt = tiny
    other = json.loads(gt.read_text(encoding="utf-8"))
    for img in other["images"]:
        img["file_name"] = "elsewhere_" + img["file_name"]
    unrelated = tmp_path / "unrelated.json"
    unrelated.write_text(json.dumps(other), encoding="utf-8")
    config = BenchmarkConfig(images=images, annotations=unrelated, batch_sizes=(1, 3), warmup=0, repeats=2)
    code, data = run_worker_here(tmp_path, fixed, config)
    assert code == 1
    row = BenchmarkRow.from_dict(data)
    assert row.error.startswith("map: BenchmarkError: none of the 4 images is listed in")
    check_latencies(row, (1, 3), repeats=2)  # measured before the mAP stage failed: kept
    assert row.latency_at(3).calls_per_batch == 3 and row.load_ms > 0 and row.map_50_95 is None


def test_worker_bad_invocation(tmp_path):
    assert worker.main([]) == 2
    assert worker.main([str(tmp_path / "absent.json"), str(tmp_path / "out.json")]) == 2


def test_model_size_counts_external_data(tmp_path):
    path = tiny_detector(tmp_path / "ext.onnx", external_data=True)
    data = tmp_path / "ext.onnx.data"
    assert data.is_file() and data.stat().st_size > 30_000
    assert model_size_bytes(path) == path.stat().st_size + data.stat().st_size
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00garbage")
    assert model_size_bytes(broken) == 8


# ------------------------------------------------------------------------------ config, report


def test_config_validation():
    with pytest.raises(BenchmarkError, match="no images"):
        BenchmarkConfig(images=[])
    with pytest.raises(BenchmarkError, match="list of image paths"):
        BenchmarkConfig(images="photos/")
    with pytest.raises(BenchmarkError, match="at least 1"):
        BenchmarkConfig(images=["a.jpg"], batch_sizes=(0, 4))
    with pytest.raises(BenchmarkError, match="unknown device"):
        BenchmarkConfig(images=["a.jpg"], device="tpu")
    with pytest.raises(BenchmarkError, match="repeats"):
        BenchmarkConfig(images=["a.jpg"], repeats=0)
    config = BenchmarkConfig(images=[Path("a.jpg")], batch_sizes=[8, 1, 8])
    assert config.images == ["a.jpg"] and config.batch_sizes == (1, 8)
    assert BenchmarkConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(BenchmarkError, match="no models"):
        benchmark_models([], config, progress=False)
    with pytest.raises(BenchmarkError, match="2 names given for 1 models"):
        benchmark_models(["a.onnx"], config, names=["x", "y"], progress=False)
    with pytest.raises(BenchmarkError, match="cannot benchmark 42"):
        benchmark_models(["a.onnx", 42], config, progress=False)


def synthetic_report(with_map: bool = True) -> BenchmarkReport:
    def row(name, size, p50s, mAP):
        lat = [BatchLatency.from_times(b, [p / 1000 * f for f in (0.9, 1.0, 1.1, 1.5)]) for b, p in zip((1, 8), p50s)]
        return BenchmarkRow(
            name=name,
            model=f"{name}.onnx",
            size_bytes=size,
            load_ms=12.0,
            latency=lat,
            peak_mb=150.0,
            map_50_95=mAP if with_map else None,
            map_50=mAP and mAP + 0.2,
        )

    rows = [row("fp32", 4_000_000, (20.0, 160.0), 0.40), row("int|8", 1_000_000, (10.0, 40.0), 0.38)]
    rows.append(BenchmarkRow(name="gone", model="gone.onnx", error="load: ModelLoadError: boom\nmore"))
    config = BenchmarkConfig(images=["a.jpg"], annotations="gt.json" if with_map else None)
    return BenchmarkReport(rows=rows, environment={"cpu": "Test CPU", "logical_cores": 2}, config=config)


def test_report_ratios_markdown_and_plots(tmp_path):
    report = synthetic_report()
    fp32, int8, gone = report.rows
    assert report.size_ratio(int8) == 0.25
    assert report.speedup(int8, 1) == pytest.approx(2.0) and report.speedup(int8, 8) == pytest.approx(4.0)
    assert report.map_drop(int8) == pytest.approx(0.02)
    lat = fp32.latency_at(1)
    assert lat.p50_ms == pytest.approx(21.0) and lat.throughput == pytest.approx(1 / 0.0225)  # 18, 20, 22, 30 ms

    markdown = report.to_markdown()
    rows = table_rows(markdown)
    assert len(rows) == 3
    assert rows[1].startswith("| int\\|8 | 0.95 | 0.25× | 12 |")  # "|" in a name is escaped
    assert "| 2.00× | 4.00× | 150 | 0.3800 | 0.5800 | +0.0200 |" in rows[1]
    assert rows[2].startswith("| gone ² | — |")
    assert "gone failed**: load: ModelLoadError: boom" in markdown and "more" not in markdown

    assert BenchmarkReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    report.plot(tmp_path / "scatter.png")
    check_png(tmp_path / "scatter.png")
    synthetic_report(with_map=False).plot(tmp_path / "bars.png")
    check_png(tmp_path / "bars.png")
    BenchmarkReport(rows=[gone], environment={}, config=report.config).plot(tmp_path / "empty.png")
    check_png(tmp_path / "empty.png")


# ------------------------------------------------------------------------------ YOLOX-Nano


@pytest.mark.real
def test_yolox_nano_benchmark_map_matches_pipeline_and_pycocotools(asset, tmp_path):
    model = asset("models/yolox_nano_416_coco.onnx")
    gt = asset("coco/annotations/instances_val2017_dev64.json")
    images = sorted(asset("coco/images/val2017").glob("*.jpg"))[:4]
    config = BenchmarkConfig(images=images, annotations=gt, batch_sizes=(1, 2), warmup=1, repeats=3)
    report = benchmark_models([model], config, progress=False)
    (row,) = report.rows
    assert row.ok, row.error
    assert row.family == "yolox" and row.input_hw == (416, 416) and row.fixed_batch and row.model_batch == 1
    assert row.size_bytes == os.path.getsize(model)
    check_latencies(row, (1, 2), repeats=3)
    assert row.latency_at(2).calls_per_batch == 2
    assert row.peak_mb > row.baseline_mb > 0

    reference = independent_map(model, images, gt)
    assert (row.map_50_95, row.map_50) == pytest.approx(reference, abs=1e-12)
    assert 0.2 < row.map_50_95 < 0.7 and row.map_images == 4  # a working decoder, not a degenerate 0

    paths = report.write(tmp_path)
    assert BenchmarkReport.from_json(paths["json"]) == report
    assert len(table_rows(paths["markdown"].read_text(encoding="utf-8"))) == 1
    check_png(paths["png"])


def test_peak_memory_is_the_workers_own_not_its_parents():
    # Linux carries a parent's peak RSS across fork + exec into the child's ru_maxrss; the worker
    # reads its own high-water mark instead, so a big parent does not inflate its numbers.
    ballast = np.ones(300 * 2**20 // 8)  # 300 MiB held by this (parent) process
    code = "from visionpipe.optimize._benchmark_worker import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 0 < float(out) < 250, out
    del ballast


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("visionpipe.no_such_worker", "worker exited with code 1 without writing a result: "),
        ("this", "worker exited with code 0 without writing a result"),  # exits 0, writes nothing
    ],
)
def test_worker_that_dies_without_a_result_is_a_failed_row(tiny, monkeypatch, module, expected):
    fixed, _, images, _ = tiny
    monkeypatch.setattr(benchmark, "WORKER_MODULE", module)
    config = BenchmarkConfig(images=images[:1], batch_sizes=(1,), warmup=0, repeats=1)
    row = benchmark.run_variant(fixed, config)
    assert row.error.startswith(expected), row.error
    assert row.name == "tiny_fixed" and row.latency == [] and row.size_bytes == os.path.getsize(fixed)


def test_runtimes_side_by_side(tiny, tmp_path):
    """``runtimes=`` runs each model on every runtime named, labelled by runtime, same mAP."""
    _, dynamic, images, gt = tiny
    config = BenchmarkConfig(images=images, annotations=gt, batch_sizes=(1,), warmup=1, repeats=2)
    report = benchmark_models([dynamic], config, progress=False, runtimes=["onnxruntime", "openvino"])
    assert [r.name for r in report.rows] == ["tiny_dynamic [onnxruntime]", "tiny_dynamic [openvino]"]
    ort_row, openvino_row = report.rows
    assert ort_row.ok and openvino_row.ok, (ort_row.error, openvino_row.error)
    assert ort_row.providers == ["CPUExecutionProvider"] and openvino_row.providers == ["openvino"]
    assert openvino_row.map_50_95 == pytest.approx(ort_row.map_50_95, abs=1e-3)
    assert report.speedup(openvino_row, 1) is not None
    with pytest.raises(Exception, match="unknown runtime 'tflite'"):
        benchmark_models([dynamic], config, progress=False, runtimes=["tflite"])
