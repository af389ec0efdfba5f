"""Pipeline: mixed good and bad inputs, ordering, laziness, batch-size invariance, times, lifecycle."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import visionpipe
from tests.models.onnx_graphs import constant_model
from visionpipe import ImageDecodeError, Pipeline, Result

PHOTOS = [
    "000000000139.jpg",
    "000000000285.jpg",
    "000000000632.jpg",
    "000000000724.jpg",
    "000000000776.jpg",
    "000000000785.jpg",
]


@pytest.fixture(scope="module")
def photos(asset):
    return [asset(f"coco/images/val2017/{name}") for name in PHOTOS]


@pytest.fixture(scope="module")
def yolox(asset):
    return visionpipe.load_model(asset("models/yolox_nano_416_coco.onnx"), family="yolox")


@pytest.fixture
def tiny(tmp_path):
    """A dynamic-batch YOLOv8-layout graph with one planted box (class 0, score 0.9) on a 64x64 input."""
    values = np.zeros((4 + 2, 8), np.float32)
    values[:4, 0] = (32, 32, 20, 20)
    values[4, 0] = 0.9
    return visionpipe.load_model(constant_model(tmp_path / "tiny.onnx", values, input_hw=(64, 64)), family="yolov8")


@pytest.fixture
def bad_inputs(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is a text file, not a JPEG\n")
    noise = np.random.default_rng(0).bytes(4096)
    assert not noise.startswith((b"\xff\xd8", b"\x89PNG", b"BM", b"GIF"))
    return {"missing": str(tmp_path / "missing.jpg"), "empty": empty, "text": text, "noise": noise}


# -- mixed inputs --------------------------------------------------------------------------------------


@pytest.mark.real
def test_mixed_good_and_bad_inputs_keep_order_and_isolate_errors(yolox, photos, bad_inputs):
    bgr = cv2.imread(str(photos[2]), cv2.IMREAD_COLOR)
    gray = cv2.imread(str(photos[3]), cv2.IMREAD_GRAYSCALE)
    assert bgr.ndim == 3 and gray.ndim == 2
    inputs = [
        str(photos[0]),  # 0 good: path
        bad_inputs["missing"],  # 1 bad
        photos[1].read_bytes(),  # 2 good: encoded bytes
        bad_inputs["empty"],  # 3 bad: zero-byte file
        bgr,  # 4 good: BGR array
        bad_inputs["text"],  # 5 bad: text named .jpg
        gray,  # 6 good: grayscale array
        bad_inputs["noise"],  # 7 bad: random bytes
    ]
    good = {0: photos[0], 2: photos[1], 4: photos[2], 6: photos[3]}
    with Pipeline(yolox) as pipe:
        results = pipe.run(inputs, batch_size=3)

    assert len(results) == len(inputs)
    assert all(isinstance(r, Result) for r in results)
    assert [r.index for r in results] == list(range(len(inputs)))
    for i, result in enumerate(results):
        if i in good:
            assert result.ok and result.error is None, result.error
            assert result.detections is not None
            assert len(result.detections) > 0  # real photos with a real detector
            h, w = cv2.imread(str(good[i])).shape[:2]
            assert result.image_size == (h, w)
        else:
            assert not result.ok
            assert isinstance(result.error, ImageDecodeError), result.error
            assert result.detections is None
    assert results[0].image_id == PHOTOS[0]
    assert results[0].source == str(photos[0])
    assert results[1].image_id == "missing.jpg"
    assert results[2].image_id == "2"  # bytes have no name: their position
    assert results[2].source == f"<{len(inputs[2])} bytes>"


@pytest.mark.real
def test_one_photo_in_every_form_gives_the_same_detections(yolox, photos):
    path = photos[0]
    array = cv2.imread(str(path))
    with Pipeline(yolox) as pipe:
        from_path = pipe(path)
        from_str = pipe(str(path))
        from_bytes = pipe(path.read_bytes())
        from_bytearray = pipe(bytearray(path.read_bytes()))
        from_array = pipe(array)
        gray = cv2.cvtColor(array, cv2.COLOR_BGR2GRAY)
        from_gray = pipe(gray)
        from_gray3 = pipe(np.repeat(gray[:, :, None], 3, axis=2))
        from_bgra = pipe(np.dstack([array, np.full(array.shape[:2], 255, np.uint8)]))
    assert len(from_path) > 0
    assert from_str == from_path
    assert from_bytes == from_path
    assert from_bytearray == from_path
    assert from_array == from_path
    assert from_bgra == from_path
    assert from_gray == from_gray3


def test_call_raises_the_inputs_error(tiny, bad_inputs):
    with Pipeline(tiny) as pipe:
        for bad in bad_inputs.values():
            with pytest.raises(ImageDecodeError):
                pipe(bad)
        with pytest.raises(ImageDecodeError):
            pipe(np.zeros((10, 10, 3), np.float32))  # not uint8


@pytest.mark.parametrize("unsupported", [12345, None])
def test_unsupported_input_type_is_an_error_result_not_a_crash(tiny, unsupported):
    # decode_image turns an unsupported type into ImageDecodeError; one such input must not stop the others
    images = [np.zeros((64, 64, 3), np.uint8), unsupported, np.zeros((64, 64, 3), np.uint8)]
    with Pipeline(tiny) as pipe:
        results = pipe.run(images, batch_size=3)
        assert [r.index for r in results] == [0, 1, 2]
        assert [r.ok for r in results] == [True, False, True]
        assert isinstance(results[1].error, ImageDecodeError)
        with pytest.raises(ImageDecodeError):
            pipe(unsupported)  # type: ignore[arg-type]


def test_bad_input_error_says_why(tiny, bad_inputs):
    with Pipeline(tiny) as pipe:
        results = pipe.run([bad_inputs["missing"], bad_inputs["empty"]])
    assert "missing.jpg" in str(results[0].error) and "not found" in str(results[0].error)
    assert "empty" in str(results[1].error)


# -- ordering and laziness -------------------------------------------------------------------------------


def sized_images(n):
    # different sizes so each result can be matched to its input
    return [np.zeros((20 + i, 30 + 2 * i, 3), np.uint8) for i in range(n)]


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_stream_consumes_a_generator_in_input_order(tiny, batch_size):
    images = sized_images(11)
    with Pipeline(tiny) as pipe:
        results = list(pipe.stream((image for image in images), batch_size=batch_size))
    assert [r.index for r in results] == list(range(11))
    assert [r.image_size for r in results] == [im.shape[:2] for im in images]
    assert all(r.ok and len(r.detections) == 1 for r in results)


def test_stream_is_lazy_and_stops_early(tiny):
    pulled = 0
    limit = 1000

    def endless():
        nonlocal pulled
        for i in itertools.count():
            if i >= limit:
                raise AssertionError("stream read far ahead of what was consumed")
            pulled += 1
            yield np.zeros((40 + i % 7, 50, 3), np.uint8)

    with Pipeline(tiny, batch_size=2) as pipe:
        stream = pipe.stream(endless())
        assert pulled == 0  # nothing is read before the first result is asked for
        first = list(itertools.islice(stream, 5))
        assert [r.index for r in first] == [0, 1, 2, 3, 4]
        assert [r.image_size for r in first] == [(40 + i % 7, 50) for i in range(5)]
        assert 5 <= pulled <= 50  # a few batches of read-ahead, not the whole input
        after_five = pulled
        more = list(itertools.islice(stream, 3))
        assert [r.index for r in more] == [5, 6, 7]
        assert pulled <= after_five + 3 + 50
        stream.close()


# -- batch-size invariance --------------------------------------------------------------------------------


@pytest.mark.real
def test_results_do_not_depend_on_batch_size(yolox, photos):
    with Pipeline(yolox) as pipe:
        by_one = pipe.run(photos, batch_size=1)
        by_four = pipe.run(photos, batch_size=4)  # 6 images: a full and a partial batch
        alone = [pipe(photo) for photo in photos]
    assert sum(len(d) for d in alone) > 0
    for one, four, single in zip(by_one, by_four, alone):
        assert one.ok and four.ok
        assert one.detections == single
        assert four.detections == single


def test_dynamic_batch_results_match_single_runs(tiny, monkeypatch):
    sizes = []
    original = tiny.backend.forward
    monkeypatch.setattr(tiny.backend, "forward", lambda t: sizes.append(len(t)) or original(t))
    images = sized_images(5)
    with Pipeline(tiny) as pipe:
        batched = pipe.run(images, batch_size=5)
        alone = [pipe(im) for im in images]
    assert sizes[0] == 5 and sizes[1:] == [1] * 5
    for result, single in zip(batched, alone):
        np.testing.assert_allclose(result.detections.xyxy, single.xyxy, atol=1e-4)
        assert result.detections.class_id.tolist() == single.class_id.tolist()


def test_a_failing_batch_only_fails_the_guilty_image(tiny, monkeypatch):
    original = tiny.backend.forward
    calls = []

    def forward(tensor):
        calls.append(len(tensor))
        if (tensor.reshape(len(tensor), -1).mean(axis=1) > 0.9).any():  # an all-white image
            raise RuntimeError("runtime failure on the white image")
        return original(tensor)

    monkeypatch.setattr(tiny.backend, "forward", forward)
    images = [np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8), np.zeros((64, 64, 3), np.uint8)]
    with Pipeline(tiny) as pipe:
        results = pipe.run(images, batch_size=3)
    assert calls == [3, 1, 1, 1]  # the batch, then each image alone
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, RuntimeError)
    assert results[1].detections is None
    assert len(results[0].detections) == 1 and len(results[2].detections) == 1


# -- times and lifecycle ------------------------------------------------------------------------------------


def test_stage_times(tiny, bad_inputs):
    images = [np.zeros((64, 80, 3), np.uint8), bad_inputs["missing"], np.zeros((50, 50), np.uint8)]
    with Pipeline(tiny) as pipe:
        results = pipe.run(images, batch_size=2)
    for result in results:
        t = result.times
        assert min(t.decode, t.preprocess, t.infer, t.postprocess) >= 0
        assert t.total == pytest.approx(t.decode + t.preprocess + t.infer + t.postprocess)
    assert results[0].times.infer > 0 and results[2].times.infer > 0
    assert results[1].times.infer == 0  # never reached the model


def test_context_manager_closes_pools(tiny):
    with Pipeline(tiny) as pipe:
        pipe.run(sized_images(3), batch_size=2)
        pools = [pipe.pool, pipe.inference_pool]
        idents = {pool.submit(threading.get_ident).result() for pool in pools}
    for pool in pools:
        with pytest.raises(RuntimeError):
            pool.submit(lambda: None)
    alive = {t.ident for t in threading.enumerate()}
    assert not idents & alive  # the pools' threads were joined
    pipe.close()  # closing twice is harmless


def test_invalid_pipeline_arguments(tiny):
    with pytest.raises(ValueError):
        Pipeline(tiny, batch_size=0)
    with pytest.raises(ValueError):
        Pipeline(tiny, conf=1.5)
    with pytest.raises(ValueError):
        Pipeline(tiny, iou=-0.1)


@pytest.mark.parametrize("workers", [1, 4])  # the two ways it goes wrong: no results at all, or no end
def test_run_rejects_a_batch_size_below_one(tiny, workers):
    images = sized_images(3)
    with Pipeline(tiny, workers=workers) as pipe:
        calls = 0
        infer = pipe._infer

        def guarded(batch):
            # turn a would-be endless loop of empty batches into a failure instead of a hang
            nonlocal calls
            calls += 1
            if calls > 50:
                raise AssertionError("stream kept scheduling inference without consuming inputs")
            return infer(batch)

        pipe._infer = guarded  # type: ignore[method-assign]
        with pytest.raises(ValueError):
            pipe.run(images, batch_size=-1)  # the constructor refuses batch_size < 1; so must run
        assert len(pipe.run(images, batch_size=2)) == 3


def test_pipeline_from_path_with_family(tmp_path):
    values = np.zeros((6, 8), np.float32)
    values[:4, 0] = (32, 32, 20, 20)
    values[4, 0] = 0.9
    path = constant_model(tmp_path / "tiny.onnx", values, input_hw=(64, 64))
    with Pipeline(path, family="yolov8") as pipe:
        assert pipe.model.family == "yolov8"
        dets = pipe(np.zeros((64, 64, 3), np.uint8))
    np.testing.assert_allclose(dets.xyxy, [[22, 22, 42, 42]], atol=1e-4)
    with Pipeline(Path(path), family="yolov8", conf=0.95) as pipe:
        assert len(pipe(np.zeros((64, 64, 3), np.uint8))) == 0
