"""Ensemble tuning: the search's pieces on hand-made inputs, and one small real search whose
figures are checked against pycocotools run independently on separately run pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from visionpipe import Pipeline
from visionpipe.ensemble_tune import SearchSpace, neighbourhood_mean, ratio_order, tune_ensemble
from visionpipe.evaluation import evaluate_coco, split_images

GT = "coco/annotations/instances_val2017_dev64.json"


def test_weight_ratios_are_distinct_and_equal_weights_come_first():
    ratios = SearchSpace().weight_ratios(2)
    assert ratios[0] == (1.0, 1.0)
    # 16 pairs of 1..4, less the multiples of a smaller pair (2:2, 3:3, 4:4, 2:4, 4:2)
    assert len(ratios) == len(set(ratios)) == 11
    assert (3.0, 1.0) in ratios and (2.0, 2.0) not in ratios and (4.0, 2.0) not in ratios
    assert len(SearchSpace().weight_ratios(3)) == 27 - 2  # 1..3 cubed, less 2:2:2 and 3:3:3 (= 1:1:1)
    assert SearchSpace(weight_levels=(1, 3)).weight_ratios(2) == [(1.0, 1.0), (1.0, 3.0), (3.0, 1.0)]


def test_neighbourhood_mean_by_hand():
    grid = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    # along IoU only: row 0 -> (1+2)/2, (1+2+3)/3, (2+3)/2
    np.testing.assert_allclose(neighbourhood_mean(grid, None)[0], [1.5, 2.0, 2.5])
    # rows in the given order [1, 0]: row 1 sits above row 0; centre of row 0 averages 2, 1, 3, 5
    smoothed = neighbourhood_mean(grid, np.array([1, 0]))
    assert smoothed[0, 1] == pytest.approx((2 + 1 + 3 + 5) / 4)
    assert smoothed[1, 0] == pytest.approx((4 + 5 + 1) / 3)


def test_ratio_order_sorts_by_the_first_members_share():
    ratios = [(1.0, 1.0), (1.0, 3.0), (3.0, 1.0)]
    assert [ratios[i] for i in ratio_order(ratios)] == [(1.0, 3.0), (1.0, 1.0), (3.0, 1.0)]


def test_split_is_a_seeded_partition():
    choose, confirm = split_images(9, seed=3)
    assert len(choose) == 4 and len(confirm) == 5
    assert sorted(np.concatenate([choose, confirm]).tolist()) == list(range(9))
    again = split_images(9, seed=3)
    assert choose.tolist() == again[0].tolist()
    assert split_images(9, seed=4)[0].tolist() != choose.tolist()


@pytest.mark.real
def test_small_real_search_reports_independently_checked_figures(asset, tmp_path):
    yolox = {"model": str(asset("models/yolox_nano_416_coco.onnx")), "family": "yolox"}
    nanodet = {"model": str(asset("models/nanodet_m_320_coco.onnx")), "family": "nanodet"}
    specs = []
    for name, spec in (("yolox", yolox), ("nanodet", nanodet)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"model: {spec['model']}\nfamily: {spec['family']}\n", encoding="utf-8")
        specs.append(str(path))
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))[:24]
    space = SearchSpace(
        weight_levels=(1, 3), iou=(0.6, 0.7), conf=(0.02,), conf_types=("avg",), methods=("nms",), method_iou=(0.6,)
    )
    report = tune_ensemble(specs, photos, asset(GT), space=space, seed=0)
    assert len(report.trials) == space.size(2) == 3 * 2 + 1 + 1
    choose, confirm = split_images(len(photos), 0)
    assert report.images == {"choose": len(choose), "confirm": len(confirm)}

    # each member's figure: its own pipeline, run separately, scored by pycocotools
    for spec, name in zip((yolox, nanodet), report.member_names):
        with Pipeline(spec, conf=0.01, max_det=300) as pipe:
            results = pipe.run(photos)
        for part, rows in (("choose", choose), ("confirm", confirm)):
            alone = evaluate_coco([results[i] for i in rows], asset(GT), pipe.class_names).map_50_95
            assert report.member_map[name][part] == pytest.approx(alone, abs=1e-9), (name, part)

    # the written spec, run as a model, scores what the search reported on the confirming part
    out = tmp_path / "ensemble.yaml"
    out.write_text(report.spec(relative_to=tmp_path).to_yaml(), encoding="utf-8")
    assert "yolox.yaml" in out.read_text(encoding="utf-8")  # relative to the spec's folder
    with Pipeline(str(out), conf=0.01, max_det=300) as pipe:
        assert pipe.fusion == report.chosen
        fused = pipe.run([photos[i] for i in confirm])
    confirmed = evaluate_coco(fused, asset(GT), pipe.class_names).map_50_95
    assert report.ensemble_map["confirm"] == pytest.approx(confirmed, abs=1e-9)
    best = max(report.member_map[n]["confirm"] for n in report.member_names)
    assert report.gain["confirm"] == pytest.approx(confirmed - best, abs=1e-9)
    assert isinstance(report.beats_best_member, bool) and report.verdict()
