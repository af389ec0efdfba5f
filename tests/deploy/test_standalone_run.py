"""The bundle's run.py (module visionpipe.deploy.standalone_run) decodes every family it claims as
visionpipe does: same model, same photos, detections within 1e-4 — for the families the bundle tests
do not cover (FastestDet, and the YOLOv8 layout at another input size)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from visionpipe import Pipeline
from visionpipe.deploy import standalone_run
from visionpipe.deploy.bundle import _decoder_spec, _input_spec
from visionpipe.deploy.candidates import primary_source
from visionpipe.io.images import decode_image

pytestmark = pytest.mark.real


@pytest.mark.parametrize(
    ("model", "spec_update", "conf"),
    [
        ("fastestdet_352_coco.onnx", {}, 0.05),
        # random weights: class scores stay below 2e-4, so a tiny threshold to get boxes at all
        ("yolov8n_random_dynamic.onnx", {"input_size": [320, 256]}, 1e-5),
    ],
)
def test_run_py_decoding_equals_visionpipe(asset, model, spec_update, conf):
    source = primary_source(asset(f"models/{model}"))
    spec = {**source.spec, **spec_update}
    input_spec, decoder = _input_spec(spec, {}), _decoder_spec(spec)
    session = ort.InferenceSession(spec["model"], providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))[:4]
    compared = 0
    with Pipeline(spec, concurrency=1, conf=conf) as pipe:
        for photo in photos:
            image = decode_image(photo)
            want = pipe(image)
            tensor, transform = standalone_run.preprocess(image, tuple(input_spec["size"]), input_spec)
            outputs = session.run(names, {session.get_inputs()[0].name: tensor[None]})
            t = {**decoder["thresholds"], "conf": conf}
            boxes, scores, classes = standalone_run.decode(decoder, outputs, tuple(input_spec["size"]), t)
            boxes = standalone_run.to_original(boxes.astype(np.float32), transform)
            keep = standalone_run.nms(boxes, scores, t["iou"], classes, t["top_k"], t["max_det"])
            assert len(keep) == len(want), photo.name
            np.testing.assert_allclose(boxes[keep], want.xyxy, rtol=0, atol=1e-4)
            np.testing.assert_allclose(scores[keep], want.confidence, rtol=0, atol=1e-4)
            assert classes[keep].tolist() == want.class_id.tolist()
            compared += len(keep)
    assert compared > 0
