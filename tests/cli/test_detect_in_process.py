"""``visionpipe detect`` run in this process, where a decode can be observed: with
``--save-images`` each image is decoded once and annotated from that frame, so a file that changes
after it was decoded cannot abort the run (it used to be decoded a second time, outside the error
handling)."""

from __future__ import annotations

import json
import shutil

import pytest

import visionpipe.pipeline as pipeline_module
from visionpipe.cli.app import main

pytestmark = pytest.mark.real


def test_save_images_draws_on_the_frame_already_decoded(asset, yolox_spec, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    photos = sorted(asset("coco/images/val2017").glob("*.jpg"))[:3]
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    decoded = []
    original = pipeline_module.decode_image

    def decode_then_break_the_file(source, limits):
        image = original(source, limits)
        decoded.append(str(source))
        with open(source, "wb") as handle:  # the file changes right after it was read
            handle.write(b"replaced mid-run")
        return image

    monkeypatch.setattr(pipeline_module, "decode_image", decode_then_break_the_file)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["detect", str(folder), "-m", str(yolox_spec), "--save-images", "--out", str(out)])
    assert info.value.code == 0
    assert sorted(decoded) == sorted(str(folder / p.name) for p in photos)  # once each
    assert sorted(p.name for p in (out / "annotated").iterdir()) == sorted(p.name for p in photos)
    assert json.loads((out / "summary.json").read_text())["processed"] == 3
