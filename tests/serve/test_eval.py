"""mAP scored by pycocotools from the server's answers equals `visionpipe eval` on the same photos."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.serve.conftest import free_port, running, write_version
from visionpipe.serve import ServeConfig


def test_map_from_server_responses_equals_visionpipe_eval(tmp_path, asset, yolox_model):
    images = asset("coco/images/val2017")
    annotations = asset("coco/annotations/instances_val2017_dev64.json")
    ground_truth = json.loads(annotations.read_text())
    spec = write_version(tmp_path / "models", "yolox", "1", yolox_model, "yolox")

    cli = subprocess.run(
        [sys.executable, "-m", "visionpipe", "eval", "--model", str(spec), "--images", str(images),
         "--annotations", str(annotations), "--conf", "0.01", "--max-det", "300", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-2000:]
    expected = json.loads(cli.stdout)

    # the server's answers, turned into COCO records here (not by visionpipe's own writer)
    category = {c["name"]: c["id"] for c in ground_truth["categories"]}
    config = ServeConfig(sources=(tmp_path / "models",), port=free_port(), poll_seconds=0)
    records = []
    with running(config) as (url, _), httpx.Client(base_url=url, timeout=120) as client:

        def detect(image: dict) -> list[dict]:
            data = (images / image["file_name"]).read_bytes()
            body = client.post("/v1/models/yolox/detect", content=data, params={"conf": 0.01, "max_det": 300}).json()
            d = body["detections"]
            return [
                {
                    "image_id": image["id"],
                    "category_id": category[name],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
                for (x1, y1, x2, y2), score, name in zip(d["xyxy"], d["confidence"], d["class_name"])
            ]

        with ThreadPoolExecutor(4) as pool:  # concurrent, so answers come from shared batches
            for found in pool.map(detect, ground_truth["images"]):
                records.extend(found)

    coco = COCO()
    coco.dataset = {**ground_truth, "info": {}}
    coco.createIndex()
    scored = COCOeval(coco, coco.loadRes(records), "bbox")
    scored.params.imgIds = [image["id"] for image in ground_truth["images"]]
    scored.evaluate()
    scored.accumulate()
    scored.summarize()
    assert abs(scored.stats[0] - expected["map_50_95"]) < 1e-4, (scored.stats[0], expected["map_50_95"])
    assert abs(scored.stats[1] - expected["map_50"]) < 1e-4
    assert expected["images"] == len(ground_truth["images"]) == 64
