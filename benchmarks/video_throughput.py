"""Offline video throughput: VideoProcessor (policy wait) vs Pipeline.run on the same decoded frames.

(a) ``Pipeline.run`` over the clip's frames decoded into memory beforehand (no video decoding);
(b) ``VideoProcessor`` on the file with policy ``wait``: capture (H.264 decoding) in its own thread,
    overlapped with inference, every frame processed in order.
The goal is b/a >= 0.9: decoding the video should hide behind inference.

    python benchmarks/video_throughput.py [--rounds 3] [--frames 400]
"""

from __future__ import annotations

import argparse

import cv2

from _common import ASSETS, header, timed_rounds
from visionpipe import Pipeline
from visionpipe.video.processor import VideoProcessor
from visionpipe.video.sources import CaptureSource

CLIP = ASSETS / "video" / "one-by-one-person-detection.mp4"


class FirstFrames(CaptureSource):
    """The clip's first ``limit`` frames, so both paths see exactly the same frames."""

    def __init__(self, uri, limit: int) -> None:
        super().__init__(uri)
        self.limit = limit

    def read(self):
        frame = super().read()
        return frame if frame is not None and frame.index < self.limit else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=400)
    args = parser.parse_args()

    capture = cv2.VideoCapture(str(CLIP))
    frames = []
    while len(frames) < args.frames:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()

    pipeline = Pipeline({"model": ASSETS / "models" / "yolox_nano_416_coco.onnx", "family": "yolox"}, conf=0.3)

    def images() -> int:
        return sum(r.ok for r in pipeline.run(frames))

    def video() -> int:
        stats = VideoProcessor(pipeline, FirstFrames(str(CLIP), len(frames)), policy="wait").run()
        assert stats.processed == len(frames) and stats.dropped_total == 0, stats
        return stats.processed

    print(
        header(
            f"video throughput — YOLOX-Nano 416 on the first {len(frames)} frames of {CLIP.name}",
            {"rounds": args.rounds},
        )
    )
    rates = timed_rounds({"a": images, "b": video}, args.rounds)
    print()
    print("| path | frames/s |")
    print("|---|---|")
    print(f"| (a) Pipeline.run on frames decoded beforehand | {rates['a']:.1f} |")
    print(f"| (b) VideoProcessor on the file, policy wait | {rates['b']:.1f} |")
    print()
    print(f"b/a = {rates['b'] / rates['a']:.2f}   (goal >= 0.90)")
    pipeline.close()


if __name__ == "__main__":
    main()
