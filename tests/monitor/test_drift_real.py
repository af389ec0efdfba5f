"""Acceptance on the real assets: no false alarms, and drift caught on the feature that changed.

Everything goes through the real path: a Monitor writing to SQLite (images observed with their
pixels, as the server will do, or through the Pipeline and VideoProcessor), a frozen reference, a
check. Model predictions are computed once per module.
"""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from visionpipe import Pipeline
from visionpipe.monitor import Monitor, check, freeze_reference
from visionpipe.monitor.features import IMAGE_FEATURES as IMAGE_ONLY
from visionpipe.video.processor import VideoProcessor
from visionpipe.video.sources import open_source

pytestmark = pytest.mark.real

STRIDE = 5  # every 5th frame of the clips keeps the module fast


@pytest.fixture(scope="module")
def photos(asset):
    train = sorted(asset("coco/images/train2017").glob("*.jpg"))
    val = sorted(asset("coco/images/val2017").glob("*.jpg"))
    return {"train": [cv2.imread(str(p)) for p in train], "val": [cv2.imread(str(p)) for p in val]}


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return tmp_path_factory.mktemp("monitor") / "monitor.db"


def observe_images(store_path, tag: str, images: list[np.ndarray]) -> None:
    with Monitor(store_path, tag=tag) as monitor:
        for i, image in enumerate(images):
            monitor.observe(SimpleNamespace(image_id=f"{tag}-{i}"), image=image)


@pytest.fixture(scope="module")
def photo_store(store_path, photos):
    observe_images(store_path, "train", photos["train"])
    observe_images(store_path, "val", photos["val"])
    with Monitor(store_path) as monitor:
        freeze_reference(monitor.store, "train128", tag="train")
    return store_path


def image_check(store_path, tag):
    with Monitor(store_path) as monitor:
        return check(monitor.store, reference="train128", tag=tag)


def test_train_vs_val_photos_no_false_alarm(photo_store):
    result = image_check(photo_store, "val")
    assert result.window["images"] == 64
    ks = [r for r in result.results if r.test == "ks"]
    assert len(ks) >= 15 and not any(r.drift for r in ks), [r for r in ks if r.drift]
    mmd = next(r for r in result.results if r.test == "mmd")
    assert not mmd.drift and mmd.n_reference == 128 and mmd.n_current == 64


def _jpeg(image, quality=10):
    return cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


_noise = np.random.default_rng(11)
PERTURBATIONS = {
    # name: (function, the feature that must be flagged, features that may legitimately rank first)
    "darkened": (
        lambda im: (im * 0.5).astype(np.uint8),
        "brightness",
        {"brightness", "contrast", "mean_b", "mean_g", "mean_r", "dark_share", "bright_share"},
    ),
    "blurred": (lambda im: cv2.GaussianBlur(im, (0, 0), 3), "sharpness", {"sharpness", "noise"}),
    "jpeg10": (_jpeg, "blockiness", {"blockiness"}),
    "downscaled25": (
        lambda im: cv2.resize(im, (im.shape[1] // 4, im.shape[0] // 4), interpolation=cv2.INTER_AREA),
        "width",
        {"width", "height"},
    ),
    "noised": (
        lambda im: np.clip(im + _noise.normal(0, 20, im.shape), 0, 255).astype(np.uint8),
        "noise",
        {"noise"},
    ),
}


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_perturbed_val_photos_flagged_on_the_changed_feature(photo_store, photos, name):
    change, feature, allowed_first = PERTURBATIONS[name]
    observe_images(photo_store, name, [change(im) for im in photos["val"]])
    result = image_check(photo_store, name)
    ks = {r.feature: r for r in result.results if r.test == "ks"}
    assert ks[feature].drift and ks[feature].p_value < 0.01, ks[feature]
    first = min(ks.values(), key=lambda r: (r.p_value, -r.statistic))
    assert first.feature in allowed_first, first
    assert feature in result.drifted


# -- predictions: YOLOX-Nano on the clips and the photos -------------------------------------------


@pytest.fixture(scope="module")
def yolox(asset):
    with Pipeline({"model": asset("models/yolox_nano_416_coco.onnx"), "family": "yolox"}, conf=0.3) as pipe:
        yield pipe


def run_clip(pipe, clip, store_path, tag):
    with Monitor(store_path, tag=tag, class_names=pipe.class_names) as monitor:
        pipe.monitor = monitor
        try:
            stats = VideoProcessor(pipe, open_source(str(clip)), stride=STRIDE).run()
        finally:
            pipe.monitor = None
    assert stats.processed > 0 and stats.errors == 0
    return stats.processed


@pytest.fixture(scope="module")
def clip_store(tmp_path_factory, yolox, asset):
    path = tmp_path_factory.mktemp("clips") / "clips.db"
    processed = run_clip(yolox, asset("video/one-by-one-person-detection.mp4"), path, "person")
    run_clip(yolox, asset("video/car-detection.mp4"), path, "car")
    with Monitor(path) as monitor:
        rows = monitor.store.records(tag="person")
        assert len(rows) == processed
        half = len(rows) // 2
        freeze_reference(monitor.store, "person-first-half", tag="person", until=rows[half][1])
        freeze_reference(monitor.store, "person", tag="person")
    return path, half


def test_person_clip_halves_no_false_alarm_on_predictions(clip_store):
    path, half = clip_store
    with Monitor(path) as monitor:
        rows = monitor.store.records(tag="person")
        result = check(monitor.store, reference="person-first-half", tag="person", since=rows[half][1])
    assert result.window["images"] == len(rows) - half
    decisive = [r for r in result.results if r.p_value is not None and r.feature not in IMAGE_ONLY]
    assert {r.feature for r in decisive} >= {"count", "confidence_mean", "class_mix"}
    assert not any(r.drift for r in decisive), [r for r in decisive if r.drift]


def test_person_clip_vs_car_clip_flagged_on_class_mix(clip_store):
    path, _ = clip_store
    with Monitor(path) as monitor:
        result = check(monitor.store, reference="person", tag="car")
    chi2 = next(r for r in result.results if r.test == "chi2")
    assert chi2.drift and chi2.p_value < 0.01, chi2
    assert "class_mix" in result.drifted


def test_broken_int8_build_flagged_on_confidence_or_count_without_labels(tmp_path, asset, photos, yolox):
    from visionpipe.optimize.quantize import quantize_dynamic_int8

    int8 = quantize_dynamic_int8(asset("models/yolox_nano_416_coco.onnx"), tmp_path / "yolox_int8_dynamic.onnx")
    store = tmp_path / "int8.db"
    with Monitor(store, tag="fp32") as monitor:
        yolox.monitor = monitor
        try:
            yolox.run(photos["val"], batch_size=4)
        finally:
            yolox.monitor = None
        monitor.flush()  # records are written by a background thread: freeze only what is stored
        freeze_reference(monitor.store, "fp32", tag="fp32")
    with Pipeline({"model": int8, "family": "yolox"}, conf=0.3) as broken:
        with Monitor(store, tag="int8") as monitor:
            broken.monitor = monitor
            broken.run(photos["val"], batch_size=4)
            monitor.flush()
            result = check(monitor.store, reference="fp32", tag="int8")
    flagged = {r.feature for r in result.results if r.test == "ks" and r.drift and r.p_value < 0.01}
    assert flagged & {"count", "empty", "confidence_mean", "confidence_max"}, result.drifted
    # the same photos: no image feature may drift
    assert not flagged & set(IMAGE_ONLY)
