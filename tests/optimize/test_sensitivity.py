"""The bisection bookkeeping, with a made-up cost per node standing in for quantize-and-evaluate."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from visionpipe.optimize.sensitivity import (
    Segment,
    bisect_sensitivity,
    conv_units,
    split_even,
)

UNITS = [(f"conv{i}", f"act{i}") for i in range(16)]


def additive(costs: dict[str, float], calls: list[list[str]]):
    """mAP drop of quantizing ``nodes`` alone: the sum of their nodes' made-up costs."""

    def measure(nodes: list[str]) -> float:
        calls.append(list(nodes))
        return sum(costs.get(n, 0.0) for n in nodes)

    return measure


def test_split_even_covers_every_unit_once_in_order():
    for parts in (1, 3, 8, 16, 40):
        segments = split_even(UNITS, parts)
        assert [u for s in segments for u in s.units] == UNITS
        sizes = [len(s.units) for s in segments]
        assert max(sizes) - min(sizes) <= 1 and len(segments) == min(parts, len(UNITS))


def test_single_culprits_are_isolated():
    costs = {"conv3": 0.2, "act11": 0.05}
    calls: list[list[str]] = []
    leaves = bisect_sensitivity(UNITS, additive(costs, calls), threshold=0.01, initial_segments=4)
    assert leaves[0].nodes == ["conv3", "act3"] and leaves[0].map_drop == pytest.approx(0.2)
    assert leaves[1].nodes == ["conv11", "act11"] and leaves[1].map_drop == pytest.approx(0.05)
    assert all(leaf.map_drop == 0 for leaf in leaves[2:])
    assert sorted(n for leaf in leaves for n in leaf.nodes) == sorted(n for u in UNITS for n in u)
    # 4 segments, then each culprit's segment of 4 units halved twice: 4 + 2 * (2 + 2) measurements
    assert len(calls) == 12


def test_loss_that_needs_two_units_together_keeps_the_parent():
    def together(nodes: list[str]) -> float:
        return 0.1 if {"conv4", "conv5"} <= set(nodes) else 0.0

    leaves = bisect_sensitivity(UNITS, together, threshold=0.01, initial_segments=2)
    assert leaves[0].map_drop == 0.1
    assert {"conv4", "conv5"} <= set(leaves[0].nodes)
    assert len(leaves[0].segment.units) == 2  # halved down to the pair, not further


def test_budget_limits_measurements():
    costs = {n: 0.02 for u in UNITS for n in u}  # everything is sensitive
    calls: list[list[str]] = []
    bisect_sensitivity(UNITS, additive(costs, calls), threshold=0.001, initial_segments=4, max_measurements=9)
    assert len(calls) <= 9


def test_on_measure_reports_every_measurement():
    seen: list[tuple[Segment, float]] = []
    calls: list[list[str]] = []
    bisect_sensitivity(
        UNITS,
        additive({"conv0": 1.0}, calls),
        threshold=0.5,
        initial_segments=2,
        on_measure=lambda segment, drop: seen.append((segment, drop)),
    )
    assert [s.nodes for s, _ in seen] == calls


def test_conv_units_from_a_graph(tmp_path):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    nodes = [
        helper.make_node("Identity", ["x"], ["x0"], name="pre"),
        helper.make_node("Conv", ["x0", "w"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["y"], name=""),  # unnamed: cannot be excluded, left out
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [weight],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert conv_units(path) == [("pre", "conv1", "relu1"), ("conv2",)]
