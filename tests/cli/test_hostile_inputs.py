"""``visionpipe detect`` and ``eval`` against hostile and careless inputs, run as a user would.

The promise (README, "What happens with bad input"): a bad input is named on one line and the rest
are processed (exit 2); usage and model problems are one line (exit 1); no traceback; no half
written file; the first line a user reads is visionpipe's own. Every hostile file is made here.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import _environment, visionpipe_command
from .helpers import describe

pytestmark = pytest.mark.real

PHOTOS = ["000000000139.jpg", "000000000285.jpg", "000000000632.jpg"]


@pytest.fixture
def photos(asset, tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(asset(f"coco/images/val2017/{name}"), folder / name)
    return folder


def no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr, describe(proc)


def no_part_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*.part")], sorted(folder.rglob("*"))


# -- item 1: a pixel bomb among good photos --------------------------------------------------------------


def test_a_jpeg_bomb_with_an_unusual_marker_is_one_failed_input(cli, yolox_spec, photos, tmp_path):
    data = bytearray((photos / PHOTOS[0]).read_bytes())
    pos = 2
    while data[pos + 1] not in (0xC0, 0xC2):  # walk to the frame header by segment lengths
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    data[pos + 5 : pos + 9] = (60000).to_bytes(2, "big") * 2
    (photos / "bomb.jpg").write_bytes(bytes(data[:2]) + b"\xff\x01" + bytes(data[2:]))
    start = time.monotonic()
    proc = cli("detect", photos, "-m", yolox_spec, "--out", tmp_path / "out", "--save-images")
    assert proc.returncode == 2, describe(proc)
    assert time.monotonic() - start < 120
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("failed: ") and "bomb.jpg" in lines[0] and "60000x60000" in lines[0], describe(proc)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["processed"] == 3 and len(summary["failed"]) == 1
    assert len(list((tmp_path / "out" / "annotated").iterdir())) == 3


# -- item 3 and 13: names with control characters, names that are not UTF-8 ------------------------------


def test_control_characters_in_names_are_escaped_on_the_terminal_but_exact_in_outputs(
    cli, yolox_spec, photos, tmp_path
):
    evil = "x\x1b[2J\x1b[1;31mfailed: fake\rline.jpg"
    (photos / evil).write_bytes(b"not an image")
    proc = cli("detect", photos, "-m", yolox_spec, "--out", tmp_path / "out", "-f", "jsonl", "-f", "csv")
    assert proc.returncode == 2, describe(proc)
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr
    assert "x\\x1b[2J\\x1b[1;31mfailed: fake\\rline.jpg" in proc.stderr
    assert sum(line.startswith("failed:") for line in proc.stderr.splitlines()) == 1
    records = [json.loads(line) for line in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    assert str(photos / evil) in {r["path"] for r in records}  # exact, not escaped
    with open(tmp_path / "out" / "detections.csv", newline="", encoding="utf-8") as handle:
        assert str(photos / evil) in {row["path"] for row in csv.DictReader(handle)}


def test_a_file_name_that_is_not_utf8_is_processed_and_written_byte_for_byte(cli, yolox_spec, photos, tmp_path):
    raw = os.fsencode(photos) + b"/caf\xe9.jpg"  # Latin-1, not UTF-8
    shutil.copy(photos / PHOTOS[0], raw)
    out = tmp_path / "out"
    proc = cli("detect", photos, "-m", yolox_spec, "--out", out, "-f", "csv", "-f", "jsonl", "-f", "coco", "-f", "yolo")
    assert proc.returncode == 0, describe(proc)
    rows = (out / "detections.csv").read_bytes().splitlines()
    assert any(raw in row for row in rows)
    assert os.path.exists(os.fsencode(out) + b"/labels/caf\xe9.txt")


# -- item 4 and 5: FIFOs and endless files -----------------------------------------------------------------


@pytest.mark.parametrize("role", ["image", "list", "spec", "annotations"])
def test_a_fifo_anywhere_is_a_named_bad_input_not_a_hang(cli, yolox_spec, photos, tmp_path, role):
    fifo = (
        tmp_path / {"image": "photos/pipe.jpg", "list": "paths.txt", "spec": "m.yaml", "annotations": "gt.json"}[role]
    )
    os.mkfifo(fifo)
    args = {
        "image": [photos, "-m", yolox_spec],
        "list": [fifo, "-m", yolox_spec],
        "spec": [photos, "-m", fifo],
        "annotations": [photos, "-m", yolox_spec, "--annotations", fifo],
    }[role]
    try:
        proc = subprocess.run(
            [*visionpipe_command(), "detect", *map(str, args), "--out", str(tmp_path / "out")],
            capture_output=True, text=True, env=_environment(), timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"a FIFO as {role} hung the command")
    no_traceback(proc)
    assert "FIFO" in proc.stderr and "fifo" not in proc.stderr.replace(str(tmp_path), ""), describe(proc)
    assert proc.returncode == (2 if role == "image" else 1), describe(proc)


def test_an_endless_annotations_file_is_refused_by_its_kind(cli, yolox_spec, photos, tmp_path):
    (tmp_path / "gt.json").symlink_to("/dev/zero")
    proc = cli("detect", photos, "-m", yolox_spec, "--out", tmp_path / "out", "--annotations", tmp_path / "gt.json")
    assert proc.returncode == 1 and "device" in proc.stderr, describe(proc)
    no_traceback(proc)


# -- item 2: names_file --------------------------------------------------------------------------------------


def test_a_spec_cannot_read_names_outside_its_folder_but_the_user_can(cli, asset, photos, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("\n".join(f"line{i}" for i in range(80)) + "\n")
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    spec = spec_dir / "m.yaml"
    model = asset("models/yolox_nano_416_coco.onnx")
    spec.write_text(f"model: {model}\nfamily: yolox\nnames_file: ../secret.txt\n")
    proc = cli("detect", photos, "-m", spec, "--out", tmp_path / "out1")
    assert proc.returncode == 1 and "outside the spec's folder" in proc.stderr, describe(proc)
    assert "line0" not in proc.stderr and "80" not in proc.stderr.replace(str(tmp_path), "")
    proc = cli("detect", photos, "-m", spec, "--names-file", secret, "--out", tmp_path / "out2", "-f", "jsonl")
    assert proc.returncode == 0, describe(proc)
    names = {
        d["class_name"]
        for line in (tmp_path / "out2/detections.jsonl").read_text().splitlines()
        for d in json.loads(line)["detections"]
    }
    assert names and all(n.startswith("line") for n in names)


# -- item 17: ids unique per run -----------------------------------------------------------------------------


def test_two_images_with_one_name_in_different_folders_get_distinct_ids(cli, yolox_spec, asset, tmp_path):
    inputs = tmp_path / "in"
    for sub, name in (("a", PHOTOS[0]), ("b", PHOTOS[1])):
        (inputs / sub).mkdir(parents=True)
        shutil.copy(asset(f"coco/images/val2017/{name}"), inputs / sub / "same.jpg")
    out = tmp_path / "out"
    proc = cli(
        "detect",
        inputs,
        "-m",
        yolox_spec,
        "--out",
        out,
        "-f",
        "jsonl",
        "-f",
        "coco-results",
        "-f",
        "coco",
        "-f",
        "yolo",
        "--save-images",
    )
    assert proc.returncode == 0, describe(proc)
    ids = [json.loads(line)["id"] for line in (out / "detections.jsonl").read_text().splitlines()]
    assert ids == ["a/same.jpg", "b/same.jpg"]
    coco_ids = {r["image_id"] for r in json.loads((out / "detections.json").read_text())}
    assert len(coco_ids) == 2
    dataset = json.loads((out / "coco.json").read_text())
    assert sorted(i["file_name"] for i in dataset["images"]) == ["a/same.jpg", "b/same.jpg"]
    assert (out / "labels/a/same.txt").is_file() and (out / "labels/b/same.txt").is_file()
    assert (out / "annotated/a/same.jpg").is_file() and (out / "annotated/b/same.jpg").is_file()
    gt = {
        "images": [{"id": 1, "file_name": "same.jpg"}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    proc = cli("detect", inputs, "-m", yolox_spec, "--out", tmp_path / "out2", "--annotations", tmp_path / "gt.json")
    assert proc.returncode == 1 and "two inputs are named same.jpg" in proc.stderr, describe(proc)


# -- item 18: one-line errors instead of tracebacks -----------------------------------------------------------


@pytest.mark.parametrize(
    ("gt", "says"),
    [
        ([1, 2, 3], "not a COCO annotation file"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "person"}],
          "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, "x"]}]}, r"annotations\[0\]\.bbox"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "person"}],
          "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, -3, 4]}]}, r"annotations\[0\]\.bbox"),
        ({"images": {"id": 1}, "categories": []}, "'images' must be a list"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["detect", "eval"])
def test_malformed_annotations_are_one_line_errors(cli, yolox_spec, photos, tmp_path, gt, says, command):
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    if command == "detect":
        args = ["detect", photos, "--out", tmp_path / "out", "--annotations", tmp_path / "gt.json"]
    else:
        args = ["eval", "--images", photos, "--annotations", tmp_path / "gt.json"]
    proc = cli(*args, "-m", yolox_spec)
    assert proc.returncode == 1, describe(proc)
    no_traceback(proc)
    assert len(proc.stderr.strip().splitlines()) == 1 and __import__("re").search(says, proc.stderr), describe(proc)


def test_a_class_id_the_model_does_not_have_is_a_one_line_error(cli, yolox_spec, photos, tmp_path):
    proc = cli("detect", photos, "-m", yolox_spec, "--out", tmp_path / "out", "--classes", "999")
    assert proc.returncode == 1 and "999" in proc.stderr and "80 classes" in proc.stderr, describe(proc)
    no_traceback(proc)


# -- item 16: what a folder scan cannot look into is named ----------------------------------------------------


def test_links_that_go_nowhere_or_in_circles_are_named(cli, yolox_spec, photos, tmp_path):
    (photos / "gone.jpg").symlink_to(tmp_path / "no-such.jpg")
    (photos / "loop").symlink_to(photos)  # a link back to the folder being scanned
    (photos / "self.jpg").symlink_to(photos / "self.jpg")
    proc = cli("detect", photos, "-m", yolox_spec, "--out", tmp_path / "out", "-f", "jsonl")
    assert proc.returncode == 2, describe(proc)
    assert "gone.jpg" in proc.stderr and "dangling symbolic link" in proc.stderr
    assert "loop" in proc.stderr and "already scanned" in proc.stderr
    assert "self.jpg" in proc.stderr and "symbolic link loop" in proc.stderr
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["processed"] == 3 and len(summary["failed"]) == 3


def _without_root_privileges() -> list[str]:
    """Permissions do not bind root: as root, the command runs with the two capabilities that
    bypass them removed (util-linux's setpriv), so an unreadable folder is unreadable to it."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root, the test needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE"
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def test_unreadable_folders_are_named_not_skipped(yolox_spec, photos, tmp_path):
    locked = photos / "locked"
    locked.mkdir()
    shutil.copy(photos / PHOTOS[0], locked / "inside.jpg")
    locked.chmod(0)
    top = tmp_path / "top"
    top.mkdir()
    top.chmod(0)
    out = tmp_path / "out"
    run = lambda *args: subprocess.run(  # noqa: E731
        [*_without_root_privileges(), *visionpipe_command(), "detect", *map(str, args)],
        capture_output=True, text=True, env=_environment(), timeout=300,
    )  # fmt: skip
    try:
        proc = run(photos, "-m", yolox_spec, "--out", out / "a")
        assert proc.returncode == 2, describe(proc)
        assert "locked" in proc.stderr and "folder cannot be read: permission denied" in proc.stderr, describe(proc)
        proc = run(top, "-m", yolox_spec, "--out", out / "b")
        assert proc.returncode == 1, describe(proc)
        assert "cannot read folder" in proc.stderr and "permission denied" in proc.stderr, describe(proc)
    finally:
        locked.chmod(0o755)
        top.chmod(0o755)


# -- items 8 and 9: signals and a full disk -------------------------------------------------------------------


@pytest.fixture
def many_photos(asset, tmp_path) -> Path:
    folder = tmp_path / "many"
    folder.mkdir()
    sources = sorted(asset("coco/images/val2017").glob("*.jpg"))[:8]
    for i in range(120):
        shutil.copy(sources[i % len(sources)], folder / f"{i:03d}.jpg")
    return folder


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_with_whole_outputs_and_a_summary(yolox_spec, many_photos, tmp_path, sig, code):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*visionpipe_command(), "detect", str(many_photos), "-m", str(yolox_spec), "--out", str(out),
         "-f", "jsonl", "-f", "csv", "-f", "coco", "-f", "yolo", "--save-images"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment(),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "annotated").is_dir() or len(list((out / "annotated").iterdir())) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    no_part_files(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == signal.Signals(sig).name
    assert 0 < summary["processed"] < 120 and summary["not_processed"] == 120 - summary["processed"]
    lines = (out / "detections.jsonl").read_text().splitlines()
    assert len(lines) == summary["processed"]  # everything accepted is published, whole
    assert all(json.loads(line)["error"] is None for line in lines)
    assert len(json.loads((out / "coco.json").read_text())["images"]) == summary["processed"]
    assert len(list((out / "labels").iterdir())) == summary["processed"]


def test_a_writer_failing_at_close_leaves_no_part_files(yolox_spec, photos, tmp_path):
    """A full disk while the final files are published: simulated by a file-size limit (RLIMIT_FSIZE),
    which makes the kernel refuse writes past it as a full disk would (EFBIG instead of ENOSPC)."""
    import resource

    out = tmp_path / "out"
    photos_many = tmp_path / "p"
    photos_many.mkdir()
    for i in range(30):
        shutil.copy(photos / PHOTOS[i % 3], photos_many / f"{i:02d}.jpg")

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))

    proc = subprocess.run(
        [*visionpipe_command(), "detect", str(photos_many), "-m", str(yolox_spec), "--out", str(out),
         "-f", "csv", "-f", "jsonl", "-f", "coco"],
        capture_output=True, text=True, env=_environment(), timeout=300, preexec_fn=small_files,
    )  # fmt: skip
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, describe(proc)
    no_part_files(out)


# -- item 10: the output folder rule ---------------------------------------------------------------------------


def test_a_reused_out_folder_is_refused_then_replaced_coherently(cli, yolox_spec, photos, tmp_path):
    out = tmp_path / "out"
    proc = cli("detect", photos, "-m", yolox_spec, "--out", out, "-f", "yolo", "-f", "csv", "--save-images")
    assert proc.returncode == 0, describe(proc)
    (out / "notes.md").write_text("mine")
    (out / "labels" / "mine.txt").write_text("mine")
    (photos / PHOTOS[0]).write_bytes(b"broken now")  # this image fails on the second run

    proc = cli("detect", photos, "-m", yolox_spec, "--out", out, "-f", "jsonl")
    assert proc.returncode == 1, describe(proc)
    assert len(proc.stderr.strip().splitlines()) == 1 and "--exist-ok" in proc.stderr and str(out) in proc.stderr

    proc = cli("detect", photos, "-m", yolox_spec, "--out", out, "-f", "jsonl", "--exist-ok")
    assert proc.returncode == 2, describe(proc)
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert left == [".visionpipe-outputs", "detections.jsonl", "labels/mine.txt", "notes.md", "summary.json"]


def test_optimize_and_benchmark_follow_the_same_output_folder_rule(cli, asset, photos, tmp_path):
    out = tmp_path / "optimized"
    model = asset("models/nanodet_m_320_coco.onnx")
    proc = cli("optimize", model, "--prune", "0.3", "--out", out)
    assert proc.returncode == 0, describe(proc)
    first = sorted(p.name for p in out.iterdir())
    (out / "notes.md").write_text("mine")
    proc = cli("optimize", model, "--prune", "0.3", "--out", out)
    assert proc.returncode == 1 and "--exist-ok" in proc.stderr, describe(proc)
    proc = cli("optimize", model, "--prune", "0.3", "--out", out, "--exist-ok")
    assert proc.returncode == 0, describe(proc)
    assert sorted(p.name for p in out.iterdir()) == sorted([*first, "notes.md"])

    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "old.json").write_text("{}")
    proc = cli("benchmark", model, "--images", photos, "--out", bench)
    assert proc.returncode == 1 and "--exist-ok" in proc.stderr and str(bench) in proc.stderr, describe(proc)


def test_native_library_warnings_never_come_before_our_line(cli, yolox_spec, photos, tmp_path):
    """libjpeg prints "Corrupt JPEG data: N extraneous bytes" for junk between segments (and still
    decodes); that chatter stays off the terminal unless --debug asks for it."""
    data = (photos / PHOTOS[0]).read_bytes()
    app0_end = 4 + int.from_bytes(data[4:6], "big")
    (photos / "junk.jpg").write_bytes(data[:app0_end] + b"\x00" * 7 + data[app0_end:])
    (photos / "broken.jpg").write_bytes(data[: len(data) // 3])
    proc = cli("detect", photos, "-m", yolox_spec, "--out", tmp_path / "out")
    assert proc.returncode == 2, describe(proc)
    assert "Corrupt JPEG" not in proc.stderr and "libjpeg" not in proc.stderr, describe(proc)
    assert proc.stderr.splitlines()[0].startswith("failed: ") and "broken.jpg" in proc.stderr.splitlines()[0]
    proc = cli("--debug", "detect", photos, "-m", yolox_spec, "--out", tmp_path / "out2")
    assert "Corrupt JPEG data" in proc.stderr, describe(proc)  # the chatter is real: only hidden


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_optimize_in_one_line_and_leaves_no_temporary_file(asset, tmp_path, sig, code):
    # every command, not only detect and video: SIGTERM runs the same clean-up as Ctrl-C
    out = tmp_path / "optimized"
    proc = subprocess.Popen(
        [*visionpipe_command(), "optimize", str(asset("models/yolox_nano_416_coco.onnx")), "--int8",
         "--calibration", str(asset("coco/images/train2017")), "--calibration-count", "128", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment(),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not out.is_dir():  # the output folder is claimed once the model has loaded
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(1.0)  # into calibration, which takes far longer on 128 photos
    proc.send_signal(sig)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == f"stopped by {signal.Signals(sig).name}", stderr
    assert not list(out.glob("*.onnx")), sorted(out.iterdir())  # no half-made model
    leftovers = [p for p in out.rglob("*") if p.name.endswith((".part", ".tmp")) or "staging" in p.name]
    assert not leftovers, leftovers
