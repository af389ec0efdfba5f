"""Bundles end to end on real models: contents, checksums, tampering, signatures, run.py, eval."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from visionpipe import Pipeline
from visionpipe.deploy.verify import verify_bundle
from visionpipe.errors import BundleIntegrityError

from .conftest import GT, manifest_of, val_photos

pytestmark = pytest.mark.real


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plan_keeps_to_the_target_formats(planned):
    result, out, _ = planned
    plan = result.plan
    allowed = plan.target.formats
    assert result.bundle is not None and plan.chosen.candidate.format in allowed
    for a in plan.assessments:
        if a.candidate.format not in allowed:
            assert f"format {a.candidate.format} not allowed" in a.verdict
    table = (out / "plan.md").read_text(encoding="utf-8")
    assert "| candidate | format | precision | size MiB | p50 ms | p90 ms |" in table and "host proxy" in table
    assert json.loads((out / "plan.json").read_text())["chosen"] == plan.chosen.candidate.name


def test_manifest_describes_the_model(planned, asset):
    result, _, model = planned
    folder = result.bundle.folder
    manifest = manifest_of(folder)
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == _sha256(folder / name)
    assert {"run.py", "requirements.txt", "README.md"} <= files
    entry = manifest["model"]
    assert entry["precision"] == "fp32" and entry["opset"] >= 11 and entry["minimum_runtime"]["onnxruntime"]
    assert entry["required_operators"] and any("Conv" in ops for ops in entry["required_operators"].values())
    names = [n.strip() for n in asset("coco/coco80.names").read_text().splitlines() if n.strip()]
    assert manifest["decoder"]["class_names"] == names
    spec = manifest["input"]
    if model.name.startswith("yolox"):
        assert entry["format"] == "ort" and entry["ort_format_version"].isdigit()
        assert entry["variants"][0]["for_providers"] == ["nnapi", "coreml"]
        assert (folder / entry["variants"][0]["file"]).is_file()
        assert (folder / entry["required_operators_config"]).is_file()
        # the assets' MANIFEST: BGR, top-left letterbox into 416x416 filled with 114, raw 0..255
        assert (spec["size"], spec["color_order"], spec["resize"], spec["anchor"], spec["pad_value"]) == (
            [416, 416],
            "bgr",
            "letterbox",
            "top_left",
            114.0,
        )
        assert (spec["scale"], spec["mean"]) == (1.0, [0.0, 0.0, 0.0])
        assert manifest["decoder"]["thresholds"]["iou"] == 0.65
    else:
        assert entry["format"] == "onnx"
        assert (spec["size"], spec["anchor"], spec["interpolation"]) == ([320, 320], "center", "area")
        assert spec["mean"] == [103.53, 116.28, 123.675] and spec["std"] == [57.375, 57.12, 58.395]
    assert manifest["provenance"]["source_sha256"] == _sha256(model)
    assert manifest["provenance"]["tools"]["onnxruntime"]
    measured = manifest["measured"]
    assert measured["host"]["cpu"] and measured["host_proxy"] is True
    assert measured["size_bytes"] == (folder / entry["file"]).stat().st_size
    golden = manifest["golden"]
    assert np.load(folder / golden["input"]).shape == tuple(spec["shape"])


def test_intact_bundle_verifies(planned):
    report = verify_bundle(planned[0].bundle.folder, latency_runs=3, warmup=1)
    assert report.ok, report.to_text()
    assert [c.name for c in report.checks][:2] == ["manifest", "checksums"]
    assert {"golden outputs", "golden detections", "latency"} <= {c.name for c in report.checks}


def test_archive_holds_the_same_bundle(planned, tmp_path):
    bundle = planned[0].bundle
    with tarfile.open(bundle.archive) as tar:
        tar.extractall(tmp_path, filter="data")
    report = verify_bundle(tmp_path / bundle.folder.name, check_latency=False)
    assert report.ok, report.to_text()


def test_flipped_byte_in_any_file_is_named(planned, tmp_path):
    source = planned[0].bundle.folder
    names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    assert "manifest.json" in names and len(names) >= 9
    for name in names:
        copy = tmp_path / name.replace("/", "_")
        shutil.copytree(source, copy)
        target = copy / name
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        report = verify_bundle(copy, check_latency=False)
        assert not report.ok, name
        assert any(name in c.files and name in c.detail for c in report.checks if not c.ok), report.to_text()
        with pytest.raises(BundleIntegrityError, match=name.replace(".", r"\.")):
            Pipeline(copy)
        shutil.rmtree(copy)


def test_added_or_missing_file_fails(planned, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(planned[0].bundle.folder, copy)
    (copy / "model" / "extra.onnx").write_bytes(b"x")
    report = verify_bundle(copy, check_latency=False)
    assert not report.ok and any("model/extra.onnx" in c.files for c in report.checks)
    (copy / "model" / "extra.onnx").unlink()
    (copy / "README.md").unlink()
    report = verify_bundle(copy, check_latency=False)
    assert any(c.files == ["README.md"] and "missing" in c.detail for c in report.checks)
    with pytest.raises(BundleIntegrityError, match="README.md is missing"):
        Pipeline(copy)


def test_signature(planned, tmp_path):
    from visionpipe.deploy.signing import generate_keypair, sign_manifest

    copy = tmp_path / "b"
    shutil.copytree(planned[0].bundle.folder, copy)
    key, pub = generate_keypair(tmp_path / "keys")
    _, other_pub = generate_keypair(tmp_path / "other")
    sign_manifest(copy, key)
    assert verify_bundle(copy, public_key=pub, check_latency=False).ok
    assert not verify_bundle(copy, public_key=other_pub, check_latency=False).ok
    sig = copy / "manifest.sig"
    data = bytearray(sig.read_bytes())
    data[0] ^= 0xFF
    sig.write_bytes(bytes(data))
    failed = [c for c in verify_bundle(copy, public_key=pub, check_latency=False).checks if not c.ok]
    assert failed and failed[0].files == ["manifest.sig"]


def test_run_py_detections_equal_visionpipe(planned, asset, tmp_path):
    """The bundle's standalone run.py (here with this interpreter) against Pipeline("bundle/") on 16 photos."""
    folder = planned[0].bundle.folder
    photos = val_photos(asset, 16)
    out = tmp_path / "run.jsonl"
    proc = subprocess.run(
        [sys.executable, "-I", str(folder / "run.py"), *map(str, photos), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    compare_with_pipeline(folder, photos, out)


def compare_with_pipeline(folder, photos, jsonl, minimum=16):
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in photos]
    total = 0
    with Pipeline(folder) as pipe:
        for line, result in zip(lines, pipe.run(photos)):
            want = result.detections
            got = line["detections"]
            assert len(got) == len(want), line["image"]
            total += len(got)
            if got:
                np.testing.assert_allclose([d["xyxy"] for d in got], want.xyxy, rtol=0, atol=1e-4)
                np.testing.assert_allclose([d["confidence"] for d in got], want.confidence, rtol=0, atol=1e-4)
                assert [d["class_id"] for d in got] == want.class_id.tolist()
    assert total > minimum  # real detections were compared, not empty lists


def test_eval_on_the_bundle_reproduces_the_manifest_map(planned, asset):
    result, out, _ = planned
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "visionpipe",
            "eval",
            "--model",
            str(result.bundle.folder),
            "--images",
            str(out / "confirmation_images.txt"),
            "--annotations",
            str(asset(GT)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout[proc.stdout.index("{") :])
    manifest = manifest_of(result.bundle.folder)
    assert summary["images"] == manifest["measured"]["validation_images"] == 2
    assert summary["map_50_95"] == pytest.approx(manifest["measured"]["map_50_95"], abs=1e-4)
