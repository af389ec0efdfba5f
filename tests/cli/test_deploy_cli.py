"""``visionpipe deploy`` and ``visionpipe bundle`` as a user runs them.

Kept small: NanoDet-m in float32 only (no int8 build), 4 validation photos, 3 timed runs.
Contract: deploy exits 0 with a bundle, 2 when no candidate meets the target (naming the nearest
miss and by how much), 1 for usage errors; bundle verify exits 0 when every check passes, 2 if not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import describe

pytestmark = pytest.mark.real

MODEL = "models/nanodet_m_320_coco.onnx"
GT = "coco/annotations/instances_val2017_dev64.json"


@pytest.fixture(scope="module")
def photo_list(asset, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photos.txt"
    path.write_text("".join(f"{p}\n" for p in sorted(asset("coco/images/val2017").glob("*.jpg"))[:4]))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Shared by the deploy runs below: the second finds the fp32 file already measured."""
    return tmp_path_factory.mktemp("deploy-cache")


def _target(folder: Path, **limits) -> Path:
    text = "".join(f"{key}: {value}\n" for key, value in limits.items())
    path = folder / "target.yaml"
    path.write_text(text + "formats: [onnx]\nprecisions: [fp32]\nthreads: 1\n")
    return path


def test_deploy_targets_lists_the_builtins(cli):
    proc = cli("deploy", "targets")
    assert proc.returncode == 0, describe(proc)
    for name in ("mobile", "embedded", "edge_server"):
        assert f"| {name} |" in proc.stdout


def deploy(cli, asset, target, photo_list, out, *extra):
    """`visionpipe deploy` on the test model with few latency repeats (the plan, not the timing, is tested)."""
    return cli(
        "deploy", asset(MODEL), "--target", target, "--validate", asset(GT), "--images", photo_list,
        "--out", out, "--repeats", "3", "--warmup", "1", *extra,
    )  # fmt: skip


def test_target_nothing_meets_exits_2_with_the_nearest_miss(cli, asset, photo_list, cache, tmp_path):
    target = _target(tmp_path, name="tiny", max_size_mb=1, max_latency_ms=10000)
    out = tmp_path / "out"
    proc = deploy(cli, asset, target, photo_list, out)
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr
    size_mib = asset(MODEL).stat().st_size / 2**20  # fp32 ONNX is the only candidate
    expected = f"size {size_mib:.2f} MiB over the 1 MiB limit by {size_mib - 1:.2f}"
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert "no candidate meets target tiny" in last and "nearest miss: fp32.onnx" in last and expected in last, last
    assert "| fp32.onnx | onnx | fp32 |" in proc.stdout
    assert json.loads((out / "plan.json").read_text())["chosen"] is None
    assert not any(p.suffix == ".gz" for p in out.iterdir())

    # the output folder rule: a second run into the same folder is refused in one line ...
    again = deploy(cli, asset, target, photo_list, out)
    assert again.returncode == 1, describe(again)
    assert again.stderr.strip().count("\n") == 0 and str(out) in again.stderr and "--exist-ok" in again.stderr
    # ... and with --exist-ok replaces the plan, keeps what the user put there, and reuses the cache
    (out / "plan.md").write_text("an earlier run's plan\n")
    (out / "notes.txt").write_text("mine\n")
    again = deploy(cli, asset, target, photo_list, out, "--exist-ok")
    assert again.returncode == 2, describe(again)
    assert "measuring" not in again.stderr and "| fp32.onnx | onnx | fp32 |" in again.stdout  # measured once
    assert "| fp32.onnx |" in (out / "plan.md").read_text() and (out / "notes.txt").read_text() == "mine\n"
    listed = (out / ".visionpipe-outputs").read_text().split()
    assert {"plan.json", "plan.md", "confirmation_images.txt"} <= set(listed)
    assert not any(line.startswith("cache/") or line == "notes.txt" for line in listed)


def test_deploy_writes_a_bundle_that_verifies(cli, asset, photo_list, cache, tmp_path):
    target = _target(tmp_path, name="roomy", max_size_mb=20, max_latency_ms=10000)
    out = tmp_path / "out"
    proc = deploy(cli, asset, target, photo_list, out, "--name", "nd")
    assert proc.returncode == 0, describe(proc)
    assert "Chosen: **fp32.onnx**" in proc.stdout
    assert (out / "nd" / "manifest.json").is_file() and (out / "nd.tar.gz").is_file()
    listed = set((out / ".visionpipe-outputs").read_text().split())  # what a run with --exist-ok replaces
    assert {"plan.json", "nd/manifest.json", "nd/run.py", "nd.tar.gz"} <= listed
    assert any(line.startswith("nd/model/") for line in listed) and not any(
        line.startswith("cache/") for line in listed
    )
    ok = cli("bundle", "verify", out / "nd", "--runs", "3")
    assert ok.returncode == 0, describe(ok)
    assert "verified" in ok.stdout
    model = next((out / "nd" / "model").glob("*.onnx"))
    data = bytearray(model.read_bytes())
    data[100] ^= 0x10
    model.write_bytes(bytes(data))
    bad = cli("bundle", "verify", out / "nd", "--no-latency")
    assert bad.returncode == 2, describe(bad)
    assert f"FAIL file model/{model.name}" in bad.stdout
    refused = cli(
        "detect",
        asset("coco/images/val2017") / photo_list.read_text().split()[0].rsplit("/", 1)[1],
        "--model",
        out / "nd",
        "--out",
        tmp_path / "det",
    )
    assert refused.returncode == 1 and f"model/{model.name} does not match its sha256" in refused.stderr


def test_keygen_never_replaces_a_key_pair(cli, tmp_path):
    keys = tmp_path / "keys"
    first = cli("bundle", "keygen", "--out", keys)
    assert first.returncode == 0, describe(first)
    private = (keys / "bundle.key").read_bytes()
    again = cli("bundle", "keygen", "--out", keys)
    assert again.returncode == 1, describe(again)
    assert "bundle.key" in again.stderr and "never replaced" in again.stderr and "Traceback" not in again.stderr
    assert (keys / "bundle.key").read_bytes() == private
    other = cli("bundle", "keygen", "--out", keys, "--name", "second")
    assert other.returncode == 0 and (keys / "second.pub").is_file(), describe(other)


def test_deploy_usage_errors_exit_1(cli, asset, tmp_path):
    proc = cli("deploy", asset(MODEL), "--target", "mobile")
    assert proc.returncode == 1 and "--out" in proc.stderr, describe(proc)
    proc = cli(
        "deploy",
        asset(MODEL),
        "--target",
        "watch",
        "--out",
        "x",  # relative to cwd below: an unknown target must not leave the folder behind
        "--validate",
        asset(GT),
        "--images",
        asset("coco/images/val2017"),
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "unknown target 'watch'" in proc.stderr, describe(proc)
    assert not (tmp_path / "x").exists()
