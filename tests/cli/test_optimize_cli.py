"""``visionpipe optimize`` and ``visionpipe benchmark`` end to end, on YOLOX-Nano and NanoDet-m.

Kept small for CI: 4 calibration photos from train2017, 4 validation photos from val2017 with a COCO
json restricted to them. Each command runs once per module fixture; the tests below read its result.

Contract (cli/app.py, cli/optimize.py): exit 0 when everything was written; 2 when a benchmarked
model failed (the other rows still measured and written); 1 for usage errors and for models or
inputs that cannot be used, with a one-line message and no traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from visionpipe.io.outdir import MANIFEST_NAME

from .helpers import describe

pytestmark = pytest.mark.real

YOLOX = "models/yolox_nano_416_coco.onnx"
NANODET = "models/nanodet_m_320_coco.onnx"
GT = "coco/annotations/instances_val2017_dev64.json"
VAL_IMAGES = "coco/images/val2017"
TRAIN_IMAGES = "coco/images/train2017"
CALIBRATION_COUNT = 4
VAL_COUNT = 4
STEM = "yolox_nano_416_coco"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _one_line_error(proc) -> str:
    """The single non-empty stderr line of a failed command (no traceback)."""
    assert "Traceback" not in proc.stderr + proc.stdout, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line message:\n{describe(proc)}"
    return lines[0]


def _variants(out: Path) -> dict[str, dict]:
    report = _json(out / "optimize.json")
    return {row["variant"]: row for row in report["variants"]}


def _no_leftovers(out: Path) -> list[str]:
    """Hidden or temporary files the command should have removed (staged files, quantizer work dirs);
    the output folder's list of owned files (README: the output folder rule) is meant to stay."""
    return sorted(
        p.name for p in out.iterdir() if (p.name.startswith(".") and p.name != MANIFEST_NAME) or ".partial" in p.name
    )


# --------------------------------------------------------------------------------------------
# inputs


@pytest.fixture(scope="module")
def calibration(asset, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibration") / "images"
    folder.mkdir()
    for photo in sorted(asset(TRAIN_IMAGES).glob("*.jpg"))[:CALIBRATION_COUNT]:
        shutil.copy(photo, folder / photo.name)
    return folder


@pytest.fixture(scope="module")
def validation(asset, tmp_path_factory) -> tuple[Path, Path]:
    """(folder of VAL_COUNT val2017 photos, COCO json of the dev64 ground truth restricted to them)."""
    root = tmp_path_factory.mktemp("validation")
    folder = root / "images"
    folder.mkdir()
    truth = _json(asset(GT))
    chosen = sorted(truth["images"], key=lambda image: image["file_name"])[:VAL_COUNT]
    for image in chosen:
        shutil.copy(asset(VAL_IMAGES) / image["file_name"], folder / image["file_name"])
    ids = {image["id"] for image in chosen}
    subset = {**truth, "images": chosen, "annotations": [a for a in truth["annotations"] if a["image_id"] in ids]}
    assert subset["annotations"], "the chosen photos have no ground truth"
    annotations = root / "instances_val2017_dev4.json"
    annotations.write_text(json.dumps(subset), encoding="utf-8")
    return folder, annotations


# --------------------------------------------------------------------------------------------
# optimize --int8 with calibration, no validation


@pytest.fixture(scope="module")
def int8_run(cli, asset, calibration, tmp_path_factory):
    model = asset(YOLOX)
    before = _sha256(model)
    out = tmp_path_factory.mktemp("int8") / "optimized"
    proc = cli("optimize", model, "--int8", "--calibration", calibration, "--out", out)
    return proc, out, before, _sha256(model)


@pytest.fixture(scope="module")
def int8_out(int8_run) -> Path:
    proc, out, _, _ = int8_run
    assert proc.returncode == 0, describe(proc)
    return out


def test_int8_writes_model_sidecar_and_report(int8_run, int8_out, asset):
    proc = int8_run[0]
    model = int8_out / f"{STEM}_int8.onnx"
    assert model.is_file(), sorted(p.name for p in int8_out.iterdir())
    assert model.with_suffix(".yaml").is_file(), "no sidecar spec beside the int8 model"
    assert not _no_leftovers(int8_out), _no_leftovers(int8_out)
    report = _json(int8_out / "optimize.json")
    assert Path(report["source"]).resolve() == asset(YOLOX).resolve()
    variants = _variants(int8_out)
    assert set(variants) == {"int8-static"}, variants
    row = variants["int8-static"]
    assert Path(row["path"]).resolve() == model.resolve()
    assert row["size_bytes"] == model.stat().st_size
    assert row["skipped_calibration_images"] == 0
    # int8 weights: well under half the float32 file
    assert 0 < row["size_ratio"] < 0.5, row
    assert "Traceback" not in proc.stderr


def test_int8_leaves_the_original_model_unchanged(int8_run):
    proc, _, before, after = int8_run
    assert before == after, f"optimize changed the source model's bytes\n{describe(proc)}"


def test_int8_model_loads_without_family_and_detects(int8_out, asset, validation, cli, tmp_path):
    from visionpipe.models.loader import load_model

    model_path = int8_out / f"{STEM}_int8.onnx"
    model = load_model(model_path)  # no family: the sidecar spec configures it
    assert model.family == "yolox"
    assert model.name == STEM, "the sidecar spec (which keeps the source's name) was not used"
    assert tuple(model.input_hw) == (416, 416)
    names = [n.strip() for n in asset("coco/coco80.names").read_text(encoding="utf-8").splitlines() if n.strip()]
    assert list(model.class_names) == names

    images, _ = validation
    out = tmp_path / "detect"
    proc = cli("detect", images, "--model", model_path, "--format", "jsonl", "--out", out)
    assert proc.returncode == 0, describe(proc)
    records = [
        json.loads(line) for line in (out / "detections.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    assert len(records) == VAL_COUNT, records
    assert not any(r.get("error") for r in records), records
    detections = [d for r in records for d in r["detections"]]
    assert detections, "the int8 model found nothing on 4 COCO photos"
    assert all(d["class_name"] in names for d in detections)
    summary = _json(out / "summary.json")
    assert summary["family"] == "yolox" and summary["processed"] == VAL_COUNT, summary


# --------------------------------------------------------------------------------------------
# optimize --int8 without calibration: dynamic int8


@pytest.fixture(scope="module")
def fallback_run(cli, asset, tmp_path_factory):
    """On a private copy of the model, so its folder can be watched for stray files."""
    root = tmp_path_factory.mktemp("fallback")
    source_dir = root / "source"
    source_dir.mkdir()
    model = source_dir / "yolox_nano_416_coco.onnx"
    shutil.copy(asset(YOLOX), model)
    before = (sorted(p.name for p in source_dir.iterdir()), source_dir.stat().st_mtime_ns, _sha256(model))
    out = root / "optimized"
    proc = cli("optimize", model, "--int8", "--out", out)
    after = (sorted(p.name for p in source_dir.iterdir()), source_dir.stat().st_mtime_ns, _sha256(model))
    return proc, out, before, after


def test_int8_without_calibration_falls_back_to_dynamic(fallback_run):
    proc, out, _, _ = fallback_run
    assert proc.returncode == 0, describe(proc)
    assert re.search(r"no --calibration.*dynamic", proc.stderr, re.IGNORECASE), describe(proc)
    variants = _variants(out)
    assert set(variants) == {"int8-dynamic"}, variants
    model_path = Path(variants["int8-dynamic"]["path"])
    assert model_path.is_file() and model_path.with_suffix(".yaml").is_file()
    assert variants["int8-dynamic"]["size_ratio"] < 0.5

    from visionpipe.models.loader import load_model

    assert load_model(model_path).family == "yolox"


def test_int8_without_calibration_writes_nothing_beside_the_source(fallback_run):
    """The source folder may be read-only or shared: nothing may be created in it, even briefly."""
    proc, _, before, after = fallback_run
    assert proc.returncode == 0, describe(proc)
    assert after[2] == before[2], "the source model's bytes changed"
    assert after[0] == before[0], f"files left beside the source: {set(after[0]) - set(before[0])}"
    assert after[1] == before[1], (
        "the source model's folder was written to (a file was created and removed there); "
        "it fails when that folder is read-only"
    )


# --------------------------------------------------------------------------------------------
# optimize --int8 --validate: accuracy-aware


@pytest.fixture(scope="module")
def validated_run(cli, asset, calibration, validation, tmp_path_factory):
    images, annotations = validation
    out = tmp_path_factory.mktemp("validated") / "optimized"
    proc = cli(
        "optimize", asset(YOLOX), "--int8", "--calibration", calibration,
        "--validate", annotations, "--images", images, "--max-map-drop", "0.5", "--out", out,
    )  # fmt: skip
    return proc, out


def test_int8_validated_records_attempts_and_map(validated_run):
    proc, out = validated_run
    assert proc.returncode == 0, describe(proc)
    assert not _no_leftovers(out), _no_leftovers(out)
    row = _variants(out)["int8-static"]
    assert Path(row["path"]).is_file() and Path(row["path"]).with_suffix(".yaml").is_file()
    attempts = row["attempts"]
    assert attempts, row
    for attempt in attempts:
        assert attempt["reason"], attempt
        assert 0.0 <= attempt["mAP@.5:.95"] <= 1.0, attempt
    fp32, int8 = row["fp32 mAP@.5:.95"], row["mAP@.5:.95"]
    # YOLOX-Nano scores 0.36 on dev64; 4 photos are noisy, but not near zero
    assert 0.1 < fp32 <= 1.0, row
    assert 0.0 < int8 <= 1.0, row
    assert row["met_tolerance"] is True, row
    assert fp32 - int8 <= 0.5, row
    # the chosen attempt (the last one, as it met the tolerance) is the model written
    assert attempts[-1]["mAP@.5:.95"] == pytest.approx(int8, abs=1e-6), row
    assert attempts[-1]["excluded"] == len(row["excluded_nodes"]), row
    assert re.search(r"mAP", proc.stderr), describe(proc)
    # chosen on one half of the validation photos, scored once on the other
    images = row["chosen_on_images"] + row["confirmed_on_images"]
    assert row["chosen_on_images"] >= 1 and row["confirmed_on_images"] >= 1 and images >= 2, row
    assert 0.0 <= row["confirm mAP@.5:.95"] <= 1.0 and 0.0 < row["confirm fp32 mAP@.5:.95"] <= 1.0, row
    assert row["confirmed"] == (row["confirm fp32 mAP@.5:.95"] - row["confirm mAP@.5:.95"] <= 0.5), row
    assert "confirming part" in proc.stderr, describe(proc)


# --------------------------------------------------------------------------------------------
# optimize --dynamic-batch / --simplify


@pytest.fixture(scope="module")
def dynamic_run(cli, asset, tmp_path_factory):
    out = tmp_path_factory.mktemp("dynamic") / "optimized"
    return cli("optimize", asset(YOLOX), "--dynamic-batch", "--out", out, "--quiet"), out


def test_quiet_optimize_prints_no_progress(dynamic_run):
    proc, _ = dynamic_run
    assert proc.returncode == 0, describe(proc)
    assert "dynamic-batch:" not in proc.stderr, proc.stderr  # the progress line a plain run prints
    assert json.loads(proc.stdout), proc.stdout  # the report still comes out


def test_dynamic_batch_yolox_has_a_symbolic_batch(dynamic_run, validation):
    import onnx
    import onnxruntime as ort

    proc, out = dynamic_run
    assert proc.returncode == 0, describe(proc)
    path = out / f"{STEM}_dynamic_batch.onnx"
    assert path.is_file() and path.with_suffix(".yaml").is_file(), sorted(p.name for p in out.iterdir())
    assert not _no_leftovers(out), _no_leftovers(out)
    row = _variants(out)["dynamic-batch"]
    assert Path(row["path"]).resolve() == path.resolve()
    assert row["max_abs_diff"] is not None and row["max_abs_diff"] < 1e-3, row

    graph = onnx.load(str(path)).graph
    for value in (graph.input[0], graph.output[0]):
        batch = value.type.tensor_type.shape.dim[0]
        assert not batch.HasField("dim_value") and batch.dim_param, f"{value.name}: batch is still {batch}"

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    single = np.random.default_rng(0).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    (batched,) = session.run(None, {name: np.concatenate([single, single * 0.5])})
    (alone,) = session.run(None, {name: single})
    assert batched.shape[0] == 2
    np.testing.assert_allclose(batched[:1], alone, rtol=1e-3, atol=1e-3)

    from visionpipe.models.loader import load_model

    assert load_model(path).family == "yolox"


def test_dynamic_batch_nanodet_fails_with_one_line_naming_the_fixed_batch(cli, asset, tmp_path):
    out = tmp_path / "optimized"
    proc = cli("optimize", asset(NANODET), "--dynamic-batch", "--out", out)
    assert proc.returncode == 1, describe(proc)
    line = _one_line_error(proc)
    assert "nanodet_m_320_coco" in line, line
    assert re.search(r"fix\w*\b.*\bbatch\b.*\b1\b", line, re.IGNORECASE), line
    written = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert not [n for n in written if n.endswith(".onnx")], f"a failed variant left files: {written}"


@pytest.fixture(scope="module")
def simplify_run(cli, asset, tmp_path_factory):
    out = tmp_path_factory.mktemp("simplify") / "optimized"
    return cli("optimize", asset(YOLOX), "--simplify", "--out", out), out


def test_simplify_writes_a_smaller_graph_that_detects_the_same(simplify_run, asset, validation):
    from visionpipe.models.loader import load_model
    from visionpipe.pipeline import Pipeline

    proc, out = simplify_run
    assert proc.returncode == 0, describe(proc)
    path = out / f"{STEM}_slim.onnx"
    assert path.is_file() and path.with_suffix(".yaml").is_file(), sorted(p.name for p in out.iterdir())
    assert not _no_leftovers(out), _no_leftovers(out)
    row = _variants(out)["simplified"]
    assert 0 < row["nodes_after"] <= row["nodes_before"], row

    images, _ = validation
    photo = str(min(images.glob("*.jpg")))
    with Pipeline(load_model(asset(YOLOX), family="yolox"), conf=0.25) as pipe:
        (want,) = pipe.run([photo])
    with Pipeline(load_model(path), conf=0.25) as pipe:  # no family: the sidecar spec
        (got,) = pipe.run([photo])
    assert want.error is None and got.error is None
    assert len(want.detections.xyxy) > 0
    np.testing.assert_array_equal(got.detections.class_id, want.detections.class_id)
    np.testing.assert_allclose(got.detections.xyxy, want.detections.xyxy, atol=0.5)
    np.testing.assert_allclose(got.detections.confidence, want.detections.confidence, atol=1e-3)


# --------------------------------------------------------------------------------------------
# optimize usage errors


@pytest.mark.parametrize("command", ["optimize", "benchmark"])
def test_help_shows_an_example(cli, command):
    proc = cli(command, "--help")
    assert proc.returncode == 0, describe(proc)
    assert "Usage" in proc.stdout and "Example" in proc.stdout, proc.stdout


def test_no_variant_flag_is_a_usage_error(cli, asset, tmp_path):
    out = tmp_path / "optimized"
    proc = cli("optimize", asset(YOLOX), "--out", out)
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert re.search(r"--int8.*--simplify", proc.stderr, re.DOTALL), describe(proc)
    assert not out.exists(), "a usage error still wrote outputs"


def test_validate_without_images_is_a_usage_error(cli, asset, calibration, validation, tmp_path):
    _, annotations = validation
    out = tmp_path / "optimized"
    proc = cli(
        "optimize", asset(YOLOX), "--int8", "--calibration", calibration, "--validate", annotations, "--out", out
    )
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert re.search(r"--images", proc.stderr), describe(proc)
    assert not out.exists(), "a usage error still wrote outputs"


def test_calibration_images_all_corrupt_exits_1_naming_the_cause(cli, asset, tmp_path):
    folder = tmp_path / "calibration"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        (folder / f"photo{k}.jpg").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "optimized"
    proc = cli("optimize", asset(YOLOX), "--int8", "--calibration", folder, "--out", out)
    assert proc.returncode == 1, describe(proc)
    line = _one_line_error(proc)
    assert re.search(r"calibration", line, re.IGNORECASE), line
    assert re.search(r"decod|corrupt|not (a|an) .*image", line, re.IGNORECASE), line
    written = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert not [n for n in written if n.endswith(".onnx")], written


@pytest.mark.parametrize("name", ["weights.pt", "fake.onnx"])
def test_non_onnx_model_file_exits_1_with_one_line(cli, tmp_path, name):
    model = tmp_path / name
    model.write_bytes(b"\x00\x01not an ONNX model\xff\xfe\n" * 16)
    proc = cli("optimize", model, "--int8-dynamic", "--out", tmp_path / "optimized")
    assert proc.returncode == 1, describe(proc)
    line = _one_line_error(proc)
    assert name in line, line


# --------------------------------------------------------------------------------------------
# benchmark


BENCH_ARGS = ("--batch", "1,2", "--warmup", "1", "--repeats", "3")


def _table_rows(markdown: str) -> list[list[str]]:
    """Data rows of the Markdown table (header and separator left out), as cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(lines) >= 2, markdown
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.fixture(scope="module")
def benchmark_run(cli, asset, int8_out, validation, tmp_path_factory):
    images, annotations = validation
    out = tmp_path_factory.mktemp("bench") / "bench"
    int8 = int8_out / f"{STEM}_int8.onnx"
    proc = cli(
        "benchmark", asset(YOLOX), int8, "--images", images, "--annotations", annotations, *BENCH_ARGS, "--out", out
    )
    return proc, out


def test_benchmark_writes_reports_with_one_row_per_model(benchmark_run):
    proc, out = benchmark_run
    assert proc.returncode == 0, describe(proc)
    for name in ("benchmark.json", "benchmark.md", "benchmark.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = _table_rows(proc.stdout)
    assert len(rows) == 2, proc.stdout
    assert rows[0][0].startswith(STEM) and rows[1][0].startswith(f"{STEM}_int8"), rows
    assert proc.stdout.strip() == (out / "benchmark.md").read_text(encoding="utf-8").strip()

    report = _json(out / "benchmark.json")
    assert [r["name"] for r in report["rows"]] == [STEM, f"{STEM}_int8"]
    assert report["config"]["batch_sizes"] == [1, 2]
    for row in report["rows"]:
        assert row["error"] is None, row["error"]
        assert row["size_bytes"] > 0 and row["load_ms"] > 0, row
        assert [lat["batch"] for lat in row["latency"]] == [1, 2], row["latency"]
        for lat in row["latency"]:
            assert lat["runs"] == 3 and 0 < lat["p50_ms"] <= lat["p99_ms"] and lat["throughput"] > 0, lat
        assert 0.0 < row["map_50_95"] <= 1.0 and row["map_images"] == VAL_COUNT, row
    base, int8 = report["rows"]
    assert int8["relative"]["size_ratio"] < 0.5, int8["relative"]
    assert int8["relative"]["map_drop"] == pytest.approx(base["map_50_95"] - int8["map_50_95"])


def test_benchmark_broken_model_exits_2_and_keeps_the_other_row(cli, asset, validation, tmp_path):
    images, annotations = validation
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(asset(YOLOX).read_bytes()[:1_000_000])  # truncated: not a parsable model
    out = tmp_path / "bench"
    proc = cli(
        "benchmark", broken, asset(YOLOX), "--images", images, "--annotations", annotations, *BENCH_ARGS, "--out", out
    )
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr
    assert len(_table_rows(proc.stdout)) == 2, proc.stdout
    report = _json(out / "benchmark.json")
    failed, good = report["rows"]
    assert failed["name"] == "broken" and failed["error"], failed
    assert good["error"] is None, good["error"]
    assert [lat["batch"] for lat in good["latency"]] == [1, 2] and all(lat["p50_ms"] > 0 for lat in good["latency"])
    assert good["load_ms"] > 0 and 0.0 < good["map_50_95"] <= 1.0, good
    assert (out / "benchmark.md").is_file() and (out / "benchmark.png").is_file()


def test_benchmark_bad_batch_list_is_a_usage_error(cli, asset, validation, tmp_path):
    images, _ = validation
    out = tmp_path / "bench"
    proc = cli("benchmark", asset(YOLOX), "--images", images, "--batch", "1,x", "--out", out)
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert re.search(r"--batch", proc.stderr) and "1,x" in proc.stderr, describe(proc)
    assert not out.exists(), "a usage error still wrote outputs"
