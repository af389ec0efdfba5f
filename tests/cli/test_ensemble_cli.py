"""``visionpipe eval`` and ``visionpipe detect`` with an ensemble (``--model`` given twice):
YOLOX-Nano + NanoDet-m on the 64 annotated val2017 photos of the shared assets.

The ensemble's own score is checked against pycocotools run here, independently, on the COCO file
``visionpipe detect`` writes for the same ensemble; each member's score in the eval summary is
checked against a single-model ``visionpipe eval`` of that member. Every 64-image command runs
once per module. Bad fusion options must end the command with status 1 and a short error.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from .helpers import describe

GT = "coco/annotations/instances_val2017_dev64.json"
IMAGES = "coco/images/val2017"
CONF = "0.01"
# member names are the model files' stems (no `name:` in the specs)
YOLOX = "yolox_nano_416_coco"
NANODET = "nanodet_m_320_coco"

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def nanodet_spec(asset, tmp_path_factory) -> Path:
    spec = tmp_path_factory.mktemp("spec") / "nanodet.yaml"
    spec.write_text(f"model: {asset('models/nanodet_m_320_coco.onnx')}\nfamily: nanodet\n", encoding="utf-8")
    return spec


def summary_of(proc) -> dict:
    assert proc.returncode == 0, describe(proc)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        pytest.fail(f"`visionpipe eval` stdout is not one JSON document ({exc}):\n{describe(proc)}")


@pytest.fixture(scope="module")
def ensemble_eval(cli, asset, yolox_spec, nanodet_spec) -> dict:
    proc = cli(
        "eval", "-m", yolox_spec, "-m", nanodet_spec,
        "--images", asset(IMAGES), "--annotations", asset(GT), "--conf", CONF,
    )  # fmt: skip
    return summary_of(proc)


@pytest.fixture(scope="module")
def single_evals(cli, asset, yolox_spec, nanodet_spec) -> dict[str, dict]:
    return {
        name: summary_of(cli("eval", "-m", spec, "--images", asset(IMAGES), "--annotations", asset(GT), "--conf", CONF))
        for name, spec in ((YOLOX, yolox_spec), (NANODET, nanodet_spec))
    }


@pytest.fixture(scope="module")
def ensemble_detect(cli, asset, yolox_spec, nanodet_spec, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ensemble_detect") / "out"
    proc = cli(
        "detect", asset(IMAGES), "-m", yolox_spec, "-m", nanodet_spec,
        "--conf", CONF, "--annotations", asset(GT), "--format", "coco-results", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert (out / "detections.json").is_file(), describe(proc)
    return out


def pycocotools_stats(gt_path: Path, detections: Path) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(detections))
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(s) for s in evaluation.stats]


# -- eval ----------------------------------------------------------------------------------------------


def test_ensemble_eval_reports_both_members(ensemble_eval):
    assert ensemble_eval["images"] == 64
    assert ensemble_eval["failed_images"] == []
    assert ensemble_eval["model"] == f"{YOLOX}+{NANODET}"
    assert set(ensemble_eval["members"]) == {YOLOX, NANODET}
    for name, scores in ensemble_eval["members"].items():
        assert 0.0 < scores["map_50_95"] < scores["map_50"] <= 1.0, (name, scores)
    assert ensemble_eval["fusion"]["method"] == "wbf"
    assert 0.0 < ensemble_eval["map_50_95"] < ensemble_eval["map_50"] <= 1.0


def test_each_members_score_equals_a_single_model_eval(ensemble_eval, single_evals):
    for name, single in single_evals.items():
        member = ensemble_eval["members"][name]
        assert single["images"] == 64 and single["failed_images"] == []
        assert abs(member["map_50_95"] - single["map_50_95"]) <= 1e-9, (name, member, single["map_50_95"])
        assert abs(member["map_50"] - single["map_50"]) <= 1e-9, (name, member, single["map_50"])


def test_members_are_the_two_different_models(single_evals):
    # MANIFEST reference on these photos: 0.362 (YOLOX-Nano), 0.317 (NanoDet-m), +-0.005
    assert single_evals[YOLOX]["map_50_95"] == pytest.approx(0.362, abs=0.005)
    assert single_evals[NANODET]["map_50_95"] == pytest.approx(0.317, abs=0.005)


def test_ensemble_map_equals_pycocotools_on_the_ensembles_detect_output(asset, ensemble_eval, ensemble_detect):
    stats = pycocotools_stats(asset(GT), ensemble_detect / "detections.json")
    assert abs(ensemble_eval["map_50_95"] - stats[0]) <= 1e-9, (ensemble_eval["map_50_95"], stats[0])
    assert abs(ensemble_eval["map_50"] - stats[1]) <= 1e-9, (ensemble_eval["map_50"], stats[1])


def test_ensemble_detect_output_is_not_either_member_alone(asset, ensemble_detect, single_evals):
    """The fused detections score differently from both members (they are really fused)."""
    stats = pycocotools_stats(asset(GT), ensemble_detect / "detections.json")
    for single in single_evals.values():
        assert abs(stats[0] - single["map_50_95"]) > 1e-6


# -- bad fusion options ---------------------------------------------------------------------------------


def one_line_error(proc) -> str:
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error\n{describe(proc)}"
    return lines[0]


@pytest.mark.parametrize("weights", ["1,2,3", "5", "-1,1", "0,0", "nan,1"])
def test_detect_rejects_bad_weights_with_a_one_line_error(cli, asset, yolox_spec, nanodet_spec, tmp_path, weights):
    out = tmp_path / "out"
    photo = min(asset(IMAGES).glob("*.jpg"))
    proc = cli("detect", photo, "-m", yolox_spec, "-m", nanodet_spec, f"--weights={weights}", "--out", out)
    line = one_line_error(proc)
    assert "weight" in line.lower(), describe(proc)
    assert not (out / "detections.json").exists() and not (out / "detections.jsonl").exists()


def test_eval_rejects_three_weights_for_two_models(cli, asset, yolox_spec, nanodet_spec):
    proc = cli(
        "eval", "-m", yolox_spec, "-m", nanodet_spec, "--weights", "1,2,3",
        "--images", asset(IMAGES), "--annotations", asset(GT),
    )  # fmt: skip
    line = one_line_error(proc)
    assert "3" in line and "2" in line and "weight" in line.lower(), describe(proc)
    assert proc.stdout.strip() == "", describe(proc)


@pytest.mark.parametrize("command", ["detect", "eval"])
@pytest.mark.parametrize(("option", "value", "also_names"), [("--weights", "a,b", None), ("--fusion", "bogus", "wbf")])
def test_bad_fusion_options_are_usage_errors(
    cli, asset, yolox_spec, nanodet_spec, tmp_path, command, option, value, also_names
):
    args = ["-m", yolox_spec, "-m", nanodet_spec, option, value]
    if command == "detect":
        args = [min(asset(IMAGES).glob("*.jpg")), *args, "--out", tmp_path / "out"]
    else:
        args += ["--images", asset(IMAGES), "--annotations", asset(GT)]
    proc = cli(command, *args)
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert option in proc.stderr and value in proc.stderr, describe(proc)
    if also_names:  # the error lists the valid choices
        assert also_names in proc.stderr, describe(proc)
    assert proc.stdout.strip() == "", describe(proc)
