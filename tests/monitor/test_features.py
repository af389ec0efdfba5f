"""Per-image features on synthetic images with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from visionpipe.detections import Detections
from visionpipe.monitor import features as F


def test_uniform_gray_image():
    values = F.image_features(np.full((480, 640, 3), 90, np.uint8))
    assert values["brightness"] == pytest.approx(90) and values["contrast"] == pytest.approx(0, abs=1e-3)
    assert (
        values["sharpness"] == 0 and values["saturation"] == 0 and values["colourfulness"] == pytest.approx(0, abs=1e-3)
    )
    assert (values["width"], values["height"], values["aspect"]) == (640, 480, pytest.approx(4 / 3))
    assert values["dark_share"] == 0 and values["bright_share"] == 0 and values["noise"] == 0
    assert np.isnan(values["blockiness"])  # no step anywhere: undefined, not a division by zero


def test_clipped_shares_and_channel_means():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 255
    values = F.image_features(image)
    assert values["dark_share"] == pytest.approx(0.5, abs=0.02) and values["bright_share"] == pytest.approx(
        0.5, abs=0.02
    )
    assert values["mean_b"] == pytest.approx(127.5, abs=2)
    image[:, :, 2] = 200
    assert F.image_features(image)["mean_r"] == pytest.approx(200)


def test_sharpness_is_the_laplacian_variance_of_the_small_gray_copy():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 1.5)
    gray = cv2.cvtColor(F.downscale(image), cv2.COLOR_BGR2GRAY)
    assert F.image_features(image)["sharpness"] == pytest.approx(cv2.Laplacian(gray, cv2.CV_64F).var(), rel=1e-9)
    assert F.downscale(image).shape[:2] == (F.SMALL_SIDE * 3 // 4, F.SMALL_SIDE)
    assert F.downscale(image[:80, :90]).shape[:2] == (80, 90)  # never enlarged


def test_blockiness_and_noise_respond_to_what_they_measure():
    rng = np.random.default_rng(1)
    smooth = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 4)
    jpeg = cv2.imdecode(cv2.imencode(".jpg", smooth, [cv2.IMWRITE_JPEG_QUALITY, 10])[1], cv2.IMREAD_COLOR)
    noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    assert F.blockiness(smooth) == pytest.approx(1.0, abs=0.1)
    assert F.blockiness(jpeg) > 1.5
    assert F.noise(noisy) > 5 * F.noise(smooth)


def test_prediction_features_by_hand():
    dets = Detections(
        xyxy=[[0, 0, 10, 20], [0, 0, 40, 10]],
        confidence=[0.9, 0.3],
        class_id=[0, 2],
        class_names=("person", "bicycle", "car"),
    )
    values = F.prediction_features(dets, (100, 200), low_confidence=0.5)
    assert values["count"] == 2 and values["empty"] == 0
    assert values["confidence_mean"] == pytest.approx(0.6) and values["confidence_min"] == pytest.approx(0.3)
    assert values["low_confidence_share"] == 0.5
    assert values["box_area_mean"] == pytest.approx((200 + 400) / 2 / 20000)
    assert values["box_aspect_mean"] == pytest.approx((0.5 + 4) / 2)
    assert F.class_counts(dets) == {"person": 1, "car": 1}
    empty = F.prediction_features(dets[np.zeros(2, bool)], (100, 200))
    assert empty["empty"] == 1 and np.isnan(empty["confidence_mean"])


def test_opencv_statistics_equal_their_numpy_definitions():
    """The OpenCV shortcuts compute the textbook formulas (checked on a non-square noisy image)."""
    rng = np.random.default_rng(2)
    image = cv2.GaussianBlur(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8), (0, 0), 1.0)
    image[:40] = 0
    image[-30:, :100] = 255
    values = F.image_features(image)

    gray = cv2.cvtColor(F.downscale(image), cv2.COLOR_BGR2GRAY)
    assert values["dark_share"] == pytest.approx(np.mean(gray <= F.DARK_LEVEL), abs=1e-12)
    assert values["bright_share"] == pytest.approx(np.mean(gray >= F.BRIGHT_LEVEL), abs=1e-12)
    assert values["brightness"] == pytest.approx(gray.mean(), rel=1e-9)

    tiny = F.downscale(F.downscale(image), F.SMALL_SIDE // 2).astype(np.float64)
    b, g, r = tiny[..., 0], tiny[..., 1], tiny[..., 2]
    rg, yb = r - g, (r + g) / 2 - b
    expected = np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    assert values["colourfulness"] == pytest.approx(expected, rel=1e-6)

    rows = image[:: F.ROW_STEP, :, 1].astype(np.int64)
    steps = np.abs(np.diff(rows, axis=1))
    at_border = np.arange(steps.shape[1]) % 8 == 7
    assert values["blockiness"] == pytest.approx(steps[:, at_border].mean() / steps[:, ~at_border].mean(), rel=1e-9)
    second = np.abs(rows[:, :-2] - 2 * rows[:, 1:-1] + rows[:, 2:])
    assert values["noise"] == pytest.approx(second.mean(), rel=1e-9)
