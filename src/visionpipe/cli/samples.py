"""``visionpipe samples``: write a few sample images to try the built-in detectors on.

Real frames with people and cars (shipped under ``visionpipe/data/samples/``, from Intel's
CC BY 4.0 sample videos, credited in NOTICE) for ``yolox-nano-coco``, and synthetic street signs with
printed text for ``ppocr-text``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from visionpipe.cli.common import say

HELP = (
    "Write a few sample images to try the built-in models on: real frames with people and cars, and "
    "synthetic signs with printed text."
)
EXAMPLE = "Example: visionpipe samples samples/ && visionpipe detect samples/ --save-images"

SIGNS = [
    ("OPEN 24 HOURS", (40, 40, 170), (255, 255, 255)),
    ("EXIT", (30, 120, 30), (255, 255, 255)),
    ("NO PARKING", (255, 255, 255), (20, 20, 200)),
    ("Platform 9", (90, 50, 10), (240, 240, 240)),
]


def samples(
    folder: Path = typer.Argument(Path("samples"), help="Where to write the images."),
    seed: int = typer.Option(0, "--seed", help="Random seed for backgrounds and placement."),
) -> None:
    import numpy as np

    from visionpipe.data import sample_frames
    from visionpipe.io.annotate import encode_image
    from visionpipe.io.formats import atomic_write_bytes

    frames = sample_frames()
    for frame in frames:  # copied byte for byte: they are the shipped JPEGs
        atomic_write_bytes(folder / frame.name, frame.read_bytes())
    rng = np.random.default_rng(seed)
    for i, (text, background, ink) in enumerate(SIGNS):
        atomic_write_bytes(folder / f"sign_{i}.jpg", encode_image(make_sign(rng, text, background, ink), ".jpg"))
    say(f"wrote {len(frames)} video frames (people, cars) and {len(SIGNS)} text signs to {folder}")


def make_sign(rng, text: str, background: tuple, ink: tuple):
    """A textured 'street' scene with a sign carrying ``text``, slightly rotated."""
    import cv2
    import numpy as np

    height, width = 480, 640
    scene = rng.integers(60, 140, size=(height // 8, width // 8, 3), dtype=np.uint8)
    scene = cv2.GaussianBlur(cv2.resize(scene, (width, height), interpolation=cv2.INTER_CUBIC), (0, 0), 3)
    scale = 1.6
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 3)
    sign = np.full((th + 60, tw + 60, 3), background, np.uint8)
    cv2.putText(sign, text, (30, th + 28), cv2.FONT_HERSHEY_DUPLEX, scale, ink, 3, cv2.LINE_AA)
    angle = float(rng.uniform(-8, 8))
    matrix = cv2.getRotationMatrix2D((sign.shape[1] / 2, sign.shape[0] / 2), angle, 1.0)
    rotated = cv2.warpAffine(sign, matrix, (sign.shape[1], sign.shape[0]), borderValue=(0, 0, 0))
    mask = cv2.warpAffine(np.full(sign.shape[:2], 255, np.uint8), matrix, (sign.shape[1], sign.shape[0]))
    y = int(rng.integers(20, max(21, height - rotated.shape[0] - 20)))
    x = int(rng.integers(10, max(11, width - rotated.shape[1] - 10)))
    region = scene[y : y + rotated.shape[0], x : x + rotated.shape[1]]
    region[mask > 0] = rotated[mask > 0]
    return scene
