"""Targets: the built-in limits the issue names, user targets from YAML, clear errors for bad ones."""

from __future__ import annotations

import pytest

from visionpipe.deploy.targets import BUILTIN_TARGETS, TargetError, describe_targets, load_target


def test_builtin_limits_are_the_published_ones():
    mobile, embedded, edge = (BUILTIN_TARGETS[n] for n in ("mobile", "embedded", "edge_server"))
    assert (mobile.max_size_mb, mobile.max_latency_ms) == (10, 100) and "int8" in mobile.precisions
    assert (embedded.max_size_mb, embedded.max_latency_ms) == (5, 200)
    assert embedded.precisions == ("int8",) and 1 <= embedded.threads <= 2
    assert (edge.max_size_mb, edge.max_latency_ms, edge.threads) == (100, 50, 0)
    assert set(edge.precisions) == {"fp16", "fp32"}
    for target in (mobile, embedded, edge):
        assert target.max_memory_mb is not None and target.max_accuracy_loss > 0 and target.formats
    assert mobile.needs_portable_ort and not embedded.needs_portable_ort


def test_describe_lists_every_builtin():
    table = describe_targets()
    for name in BUILTIN_TARGETS:
        assert f"| {name} |" in table


def test_user_target_from_yaml(tmp_path):
    path = tmp_path / "doorbell.yaml"
    path.write_text("max_size_mb: 4\nmax_latency_ms: 250\nthreads: 1\nformats: [ort]\nprecisions: [int8]\n")
    target = load_target(path)
    assert target.name == "doorbell" and target.max_size_mb == 4 and target.formats == ("ort",)
    assert load_target("mobile") is BUILTIN_TARGETS["mobile"]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("max_size_mb: -1\nmax_latency_ms: 10\n", "max_size_mb"),
        ("max_size_mb: 1\nmax_latency_ms: 10\nformats: [tflite]\n", "formats"),
        ("max_size_mb: 1\nmax_latency_ms: 10\nspeed: fast\n", "speed"),
        ("max_latency_ms: 10\n", "max_size_mb"),
        ("- 1\n- 2\n", "mapping"),
    ],
)
def test_invalid_user_target_is_named(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TargetError, match=named):
        load_target(path)


def test_unknown_target_names_the_builtins():
    with pytest.raises(TargetError, match="mobile, embedded, edge_server"):
        load_target("watch")


def test_candidate_sources(asset):
    from visionpipe.deploy.candidates import parse_candidate, primary_source
    from visionpipe.errors import VisionpipeError

    source = primary_source(asset("models/yolov8n_random_dynamic.onnx"))
    resized = parse_candidate("size=320x256", source.spec)
    assert resized.spec["input_size"] == [320, 256] and resized.spec["model"] == source.spec["model"]
    assert resized.label.endswith("_320x256")
    other = parse_candidate(str(asset("models/nanodet_m_320_coco.onnx")), source.spec)
    assert other.spec["family"] == "nanodet" and other.spec["input_size"] == [320, 320]
    with pytest.raises(VisionpipeError, match="size=HxW"):
        parse_candidate("size=big", source.spec)


def test_int8_builds_for_different_tolerances_are_cached_apart():
    from visionpipe.deploy.candidates import BuildSettings

    loose, tight = BuildSettings(max_map_drop=0.03), BuildSettings(max_map_drop=0.01)
    assert loose.key() != tight.key() and loose.key() == BuildSettings(max_map_drop=0.03).key()
