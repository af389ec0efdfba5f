"""The public API is importable from ``visionpipe`` itself, and every callable in it documents itself
with an example."""

from __future__ import annotations

import inspect

import visionpipe


def public_objects():
    for name in visionpipe.__all__:
        if name.startswith("_"):
            continue
        yield name, getattr(visionpipe, name)  # a lazily exported name must resolve


def test_video_sources_tracker_and_fusion_come_from_the_package_root():
    from visionpipe.postprocess.fusion import fuse
    from visionpipe.video.processor import VideoProcessor
    from visionpipe.video.sources import open_source
    from visionpipe.video.tracking import ByteTracker

    assert visionpipe.VideoProcessor is VideoProcessor and visionpipe.open_source is open_source
    assert visionpipe.ByteTracker is ByteTracker and visionpipe.fuse is fuse
    assert {"VideoProcessor", "LineCounter", "PolygonZone", "FusionConfig", "register_decoder"} <= set(dir(visionpipe))


def test_every_public_class_and_function_carries_an_example():
    missing = []
    for name, obj in public_objects():
        if name == "__version__" or (isinstance(obj, type) and issubclass(obj, BaseException)):
            continue  # errors say what they mean in one line; no example to give
        doc = inspect.getdoc(obj) or ""
        if "Example::" not in doc and "::\n" not in doc and ">>>" not in doc:
            missing.append(name)
    assert not missing, f"public names whose docstring has no example: {missing}"


def test_an_unknown_name_is_an_attribute_error():
    try:
        visionpipe.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
