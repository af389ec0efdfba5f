"""The planner's choice, rejection reasons, Pareto marks and nearest miss, on measurements given by hand."""

from __future__ import annotations

import pytest

from visionpipe.deploy.candidates import Candidate
from visionpipe.deploy.planner import MIB, Measurement, assess, choose
from visionpipe.deploy.targets import Target

TARGET = Target(
    name="t",
    max_size_mb=4,
    max_latency_ms=50,
    max_memory_mb=100,
    max_accuracy_loss=0.02,
    formats=("onnx", "ort"),
    precisions=("fp32", "fp16", "int8"),
)


def _candidate(tmp_path, name, fmt="onnx", precision="fp32", content=None):
    path = tmp_path / f"{name}.{fmt}"
    path.write_bytes(content if content is not None else name.encode())
    return Candidate(
        name=name,
        source="m",
        format=fmt,
        precision=precision,
        build=precision,
        spec={"model": str(path)},
        files=[str(path)],
    )


def _m(size_mb, p90, mem, map_):
    return Measurement(size_bytes=int(size_mb * MIB), p50_ms=p90 * 0.9, p90_ms=p90, memory_mb=mem, map_50_95=map_)


def test_most_accurate_fitting_candidate_is_chosen_and_others_get_reasons(tmp_path):
    cands = [
        _candidate(tmp_path, "fp32"),
        _candidate(tmp_path, "fp16", precision="fp16"),
        _candidate(tmp_path, "int8", precision="int8"),
        _candidate(tmp_path, "slow", precision="fp16"),
    ]
    ms = [_m(8.0, 20, 50, 0.36), _m(3.5, 25, 50, 0.355), _m(1.0, 10, 40, 0.30), _m(2.0, 80, 50, 0.359)]
    assessed = assess(cands, ms, TARGET, baseline_map=0.36)
    chosen, nearest = choose(assessed)
    assert chosen is not None and chosen.candidate.name == "fp16" and nearest is None
    verdicts = {a.candidate.name: a.verdict for a in assessed}
    assert "size 8.00 MiB over the 4 MiB limit by 4.00" in verdicts["fp32"]
    assert "mAP loss 0.0600 over the 0.02 limit by 0.0400" in verdicts["int8"]
    assert "latency 80.0 ms over the 50 ms (p90, host proxy) limit by 30.0" in verdicts["slow"]
    assert verdicts["fp16"].startswith("chosen")
    # Pareto on (size, p90, mAP): fp32 is the most accurate, int8 the smallest and fastest, fp16 between;
    # "slow" is beaten by fp16 on latency and mAP but is smaller, so it stays on the front too
    assert {a.candidate.name for a in assessed if a.pareto} == {"fp32", "fp16", "int8", "slow"}


def test_dominated_candidate_is_off_the_front(tmp_path):
    cands = [_candidate(tmp_path, "a"), _candidate(tmp_path, "b")]
    assessed = assess(cands, [_m(1, 10, 10, 0.3), _m(2, 20, 10, 0.2)], TARGET, 0.3)
    assert [a.pareto for a in assessed] == [True, False]


def test_format_and_precision_not_allowed_are_rejected(tmp_path):
    target = TARGET.model_copy(update={"formats": ("ort",), "precisions": ("int8",)})
    assessed = assess([_candidate(tmp_path, "x")], [_m(1, 1, 1, 0.36)], target, 0.36)
    chosen, _ = choose(assessed)
    assert chosen is None
    assert "format onnx not allowed" in assessed[0].verdict and "precision fp32 not allowed" in assessed[0].verdict


def test_nearest_miss_is_the_relatively_smallest_violation(tmp_path):
    cands = [_candidate(tmp_path, n) for n in ("big", "nearly", "slow")]
    ms = [_m(12.0, 10, 10, 0.36), _m(4.4, 10, 10, 0.36), _m(1.0, 70, 10, 0.36)]
    chosen, nearest = choose(assess(cands, ms, TARGET, 0.36))
    assert chosen is None and nearest is not None
    assert nearest.candidate.name == "nearly"  # 10 % over, against 200 % and 40 %
    assert nearest.worst_excess == pytest.approx((4.4 - 4) / 4, rel=1e-6)
    assert "size 4.40 MiB over the 4 MiB limit by 0.40 (10%)" in nearest.violations[0].text


def test_identical_files_are_not_offered_twice(tmp_path):
    cands = [
        _candidate(tmp_path, "aware", "onnx", "int8", b"same"),
        _candidate(tmp_path, "all8", "onnx", "int8", b"same"),
    ]
    assessed = assess(cands, [_m(1, 1, 1, 0.35)] * 2, TARGET, 0.36)
    chosen, _ = choose(assessed)
    assert chosen.candidate.name == "aware"
    assert "the same file as aware" in assessed[1].verdict


def test_unmeasurable_candidate_says_why(tmp_path):
    c = _candidate(tmp_path, "ov", "onnx")
    assessed = assess([c], [Measurement(error="not measurable: cannot load model")], TARGET, 0.36)
    chosen, nearest = choose(assessed)
    assert chosen is None and nearest is None
    assert "cannot load model" in assessed[0].verdict
