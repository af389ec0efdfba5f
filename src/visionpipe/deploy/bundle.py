"""Write a deployment bundle: the chosen model and everything a device needs to run and check it.

::

    <name>/
      model/<file>                the model (+ the ORT required-operators config, a portable variant)
      golden/image.jpg            a real image, its preprocessed input tensor, the model's raw outputs
      golden/input.npy, golden/outputs.npz, golden/detections.json
      run.py                      standalone detector: numpy + opencv-python-headless + the model's
                                  runtime (onnxruntime, openvino or ncnn)
      requirements.txt            exactly those, with the minimum versions
      README.md                   how to run and verify it on the device
      manifest.json               sha256 of every file; format, precision, versions, operators; input
                                  and decoder spec; target and measured numbers; provenance
      manifest.sig                optional ed25519 signature of manifest.json
    <name>.tar.gz                 the same folder as one archive

The folder is assembled in a temporary sibling and moved into place whole, so an interrupted write
never leaves a half bundle under the final name.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.deploy.candidates import Candidate
from visionpipe.deploy.planner import Assessment, Plan
from visionpipe.deploy.targets import Target
from visionpipe.errors import BundleError
from visionpipe.models.bundle import DIGEST_KEY, MANIFEST_NAME, ZERO_DIGEST, seal_manifest, sha256_file

BUNDLE_FORMAT = 1
# Oldest ONNX Runtime release implementing each default-domain opset (ONNX Runtime's compatibility table).
ORT_FOR_OPSET = {
    11: "1.3",
    12: "1.5",
    13: "1.7",
    14: "1.10",
    15: "1.11",
    16: "1.12",
    17: "1.13",
    18: "1.14",
    19: "1.16",
    20: "1.17",
    21: "1.20",
}
# 16-bit QDQ activations (the accuracy-aware int8 builds) need this release or later, and it is the
# oldest release visionpipe itself supports: no bundle asks for less.
ORT_FOR_INT16_QDQ = "1.17"
ORT_FLOOR = "1.17"
RUN_PY_FAMILIES = ("yolox", "nanodet", "fastestdet", "yolov8")
GOLDEN_RTOL = 1e-3
GOLDEN_ATOL = 1e-3


@dataclass
class BundleResult:
    folder: Path
    archive: Path
    manifest: dict[str, Any]


def write_bundle(
    plan: Plan,
    chosen: Assessment,
    out_dir: str | os.PathLike,
    *,
    name: str,
    golden_image: str | os.PathLike,
    provenance: dict[str, Any],
    signing_key: str | os.PathLike | None = None,
) -> BundleResult:
    """Write ``<out_dir>/<name>/`` and ``<out_dir>/<name>.tar.gz`` for the chosen candidate."""
    candidate = chosen.candidate
    family = candidate.spec.get("family")
    if family not in RUN_PY_FAMILIES:
        raise BundleError(
            f"bundles carry a standalone run.py for {', '.join(RUN_PY_FAMILIES)}; {family!r} is not one of them"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir))
    try:
        model_entry = _copy_model(candidate, staging)
        spec = {**candidate.spec, "model": model_entry["file"]}
        golden = _write_golden(candidate, staging, golden_image)
        (staging / "run.py").write_text(
            (Path(__file__).with_name("standalone_run.py")).read_text(encoding="utf-8"), encoding="utf-8"
        )
        requirements = _requirements(model_entry)
        (staging / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(_device_readme(name, candidate, plan.target, requirements), encoding="utf-8")
        manifest = {
            "bundle_format": BUNDLE_FORMAT,
            DIGEST_KEY: ZERO_DIGEST,
            "name": name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": model_entry,
            "input": _input_spec(spec, model_entry),
            "decoder": _decoder_spec(spec),
            "spec": spec,
            "target": plan.target.constraints(),
            "measured": _measured(plan, chosen),
            "provenance": {**provenance, "build": candidate.build, "build_details": candidate.details},
            "golden": golden,
            "requirements": requirements,
            "files": _file_table(staging),
        }
        text = json.dumps(manifest, indent=2, sort_keys=False, default=_json_default, allow_nan=False) + "\n"
        sealed = seal_manifest(text)
        (staging / MANIFEST_NAME).write_bytes(sealed)
        if signing_key is not None:
            from visionpipe.deploy.signing import sign_manifest

            sign_manifest(staging, signing_key)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    archive = _archive(final)
    return BundleResult(final, archive, json.loads(sealed))


# --------------------------------------------------------------------------------------------
# parts


def _copy_model(candidate: Candidate, staging: Path) -> dict[str, Any]:
    model_dir = staging / "model"
    model_dir.mkdir()
    for path in [*candidate.files, *candidate.extra_files]:
        shutil.copyfile(path, model_dir / Path(path).name)
    main = f"model/{Path(candidate.files[0]).name}"
    entry: dict[str, Any] = {
        "file": main,
        "format": candidate.format,
        "precision": candidate.precision,
        "build": candidate.build,
        "companion_files": [f"model/{Path(p).name}" for p in candidate.files[1:]],
    }
    onnx_path = _onnx_of(candidate)
    if onnx_path is not None:
        entry.update(_onnx_versions(onnx_path))
    if candidate.format == "ort":
        from visionpipe.deploy.ort_format import read_required_operators

        config = next(p for p in candidate.extra_files if p.endswith(".config") and ".runtime_opt." not in p)
        entry["ort_format_version"] = candidate.details.get("ort_format_version")
        entry["ort_optimization"] = candidate.details.get("ort_optimization")
        entry["required_operators"] = read_required_operators(config)
        entry["required_operators_config"] = f"model/{Path(config).name}"
        portable = candidate.details.get("portable_variant")
        if portable:
            entry["variants"] = [
                {
                    "file": f"model/{portable}",
                    "for_providers": ["nnapi", "coreml"],
                    "why": "basic optimisations only (no CPU-only fused kernels); the rest replayed at load on CPU",
                }
            ]
        import onnxruntime

        entry["minimum_runtime"] = {"onnxruntime": onnxruntime.__version__}
        entry["minimum_runtime_note"] = "ORT-format files are read by the release that wrote them and later ones"
    elif candidate.format == "onnx":
        from visionpipe.deploy.ort_format import onnx_required_operators

        entry["required_operators"] = onnx_required_operators(candidate.path)
        entry["minimum_runtime"] = {"onnxruntime": _minimum_ort(entry, candidate)}
    elif candidate.format == "ncnn":
        import ncnn

        details = candidate.details
        entry["ncnn_blobs"] = {"input": details["ncnn_input"], "outputs": details["ncnn_outputs"]}
        entry["required_layers"] = details["ncnn_layers"]  # what a reduced NCNN build must include
        entry["weights_precision"] = details["ncnn_weights"]
        entry["inference_precision"] = "fp32"  # as measured; run.py and visionpipe both turn fp16/bf16 off
        entry["outputs_layout"] = "NCNN drops the batch axis; run.py and visionpipe put it back (1, ...)"
        entry["converter"] = {"pnnx": _package_version("pnnx")}
        entry["minimum_runtime"] = {"ncnn": ncnn.__version__}
    else:  # openvino
        import openvino

        entry["ir_version"] = _openvino_ir_version(Path(candidate.files[0]))
        entry["inference_precision_hint"] = "f32"  # as measured; run.py and visionpipe both ask for it
        entry["minimum_runtime"] = {"openvino": openvino.get_version().split("-")[0]}
    return entry


def _onnx_of(candidate: Candidate) -> Path | None:
    """The ONNX file a candidate was made from (the model itself for ONNX candidates)."""
    if candidate.format == "onnx":
        return candidate.path
    return Path(candidate.derived_from) if candidate.derived_from else None


def _onnx_versions(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    return {"opset": opsets.get("ai.onnx"), "opsets": opsets, "onnx_ir_version": model.ir_version}


def _minimum_ort(entry: dict[str, Any], candidate: Candidate) -> str:
    opset = entry.get("opset") or 0
    versions = [v for o, v in ORT_FOR_OPSET.items() if o <= opset] or [ORT_FLOOR]
    needed = [versions[-1], ORT_FLOOR] + ([ORT_FOR_INT16_QDQ] if candidate.build == "int8-aware" else [])
    return max(needed, key=_version_key)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _openvino_ir_version(xml: Path) -> str | None:
    import re

    head = xml.read_text(encoding="utf-8", errors="replace")[:2000]
    match = re.search(r'<net [^>]*version="(\d+)"', head)
    return match.group(1) if match else None


def _input_spec(spec: dict[str, Any], model_entry: dict[str, Any]) -> dict[str, Any]:
    pre = spec["preprocess"]
    height, width = spec["input_size"]
    return {
        "layout": "NCHW",
        "shape": [1, 3, height, width],
        "dtype": "float32",
        "size": [height, width],
        "color_order": pre["channel_order"],
        "resize": pre["resize"],
        "anchor": pre["anchor"],
        "pad_value": pre["pad_value"],
        "interpolation": pre["interpolation"],
        "scale": pre["scale"],
        "mean": pre["mean"],
        "std": pre["std"],
        "formula": "((pixel * scale) - mean) / std per channel, channels in color_order, after resize and padding",
        "source_image": "8-bit BGR as OpenCV decodes it",
    }


def _decoder_spec(spec: dict[str, Any]) -> dict[str, Any]:
    t = spec["thresholds"]
    return {
        "family": spec["family"],
        "options": spec.get("decoder", {}),
        "class_names": spec["classes"],
        "thresholds": {
            "conf": t["conf"] if "conf" in t else t["score"],  # "score": specs written before the rename
            "iou": t["iou"],
            "multi_label": t["multi_label"],
            "agnostic": t["agnostic"],
            "classes": t.get("classes"),
            "top_k": t.get("top_k"),
            "max_det": t["max_det"],
        },
        "nms": {
            "kind": "greedy, " + ("class-agnostic" if t["agnostic"] else "per class"),
            "iou": t["iou"],
            "order": "descending score, ties in input order; a box is suppressed when IoU > iou",
        },
        "boxes": "x1, y1, x2, y2 in original-image pixels, clipped to the image",
    }


def _measured(plan: Plan, chosen: Assessment) -> dict[str, Any]:
    m = chosen.measurement
    return {
        "host": plan.environment,
        "host_proxy": True,
        "threads": m.threads,
        "size_bytes": m.size_bytes,
        "latency_p50_ms": m.p50_ms,
        "latency_p90_ms": m.p90_ms,
        "memory_mb": m.memory_mb,
        "map_50_95": m.map_50_95,
        "map_50": m.map_50,
        "accuracy_loss": chosen.accuracy_loss,
        "baseline_map_50_95": plan.baseline_map,
        "validation_images": plan.validation_images,
    }


def _write_golden(candidate: Candidate, staging: Path, image_path: str | os.PathLike) -> dict[str, Any]:
    from visionpipe.io.images import decode_image
    from visionpipe.models.loader import load_model
    from visionpipe.pipeline import Pipeline
    from visionpipe.preprocess import preprocess

    folder = staging / "golden"
    folder.mkdir()
    shutil.copyfile(image_path, folder / f"image{Path(image_path).suffix.lower()}")
    model = load_model(candidate.spec, intra_op_threads=1)
    tensor, _ = preprocess(decode_image(str(image_path)), model.input_hw, model.preprocess)
    batch = tensor[None].astype(np.float32)
    outputs = model.backend.forward(batch)
    names = [o.name for o in model.backend.outputs]
    np.save(folder / "input.npy", batch)
    arrays: dict[str, Any] = {name: np.asarray(o) for name, o in zip(names, outputs)}
    np.savez(folder / "outputs.npz", **arrays)
    with Pipeline(model, concurrency=1) as pipe:
        found = pipe(str(image_path))
    detections = {
        "xyxy": found.xyxy.tolist(),
        "confidence": found.confidence.tolist(),
        "class_id": found.class_id.tolist(),
    }
    (folder / "detections.json").write_text(json.dumps(detections), encoding="utf-8")
    return {
        "image": f"golden/image{Path(image_path).suffix.lower()}",
        "input": "golden/input.npy",
        "outputs": "golden/outputs.npz",
        "output_names": names,
        "detections": "golden/detections.json",
        "rtol": GOLDEN_RTOL,
        "atol": GOLDEN_ATOL,
        "tolerance": "|device - golden| <= atol + rtol * |golden|, element-wise, on every output",
    }


def _requirements(model_entry: dict[str, Any]) -> list[str]:
    runtime = model_entry["minimum_runtime"]
    lines = ["numpy>=1.24", "opencv-python-headless>=4.8"]
    if "openvino" in runtime:
        lines.append(f"openvino>={runtime['openvino']}")
    elif "ncnn" in runtime:
        lines.append(f"ncnn>={runtime['ncnn']}")
    else:
        lines.append(f"onnxruntime>={runtime['onnxruntime']}")
    return lines


def _device_readme(name: str, candidate: Candidate, target: Target, requirements: list[str]) -> str:
    return f"""# {name}

{candidate.spec.get("family")} detector, {candidate.precision} {candidate.format}, planned for the
`{target.name}` target ({target.description or "user target"}).

## Run on the device

```
python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt
python run.py --check                       # checksums and the golden input/output pair
python run.py photos/ --out detections.jsonl --threads {target.threads}
```

`run.py` needs only {", ".join(r.split(">")[0] for r in requirements)}; it reads preprocessing,
decoding and thresholds from `manifest.json`. With visionpipe installed,
`visionpipe bundle verify {name}/` also times the model against the target's latency limit, and
`Pipeline("{name}/")` loads the bundle after checking every checksum.

## Limits it was planned for

size ≤ {target.max_size_mb:g} MiB, p90 latency ≤ {target.max_latency_ms:g} ms at {target.thread_label()},
memory ≤ {target.max_memory_mb if target.max_memory_mb is not None else "—"} MiB, mAP loss ≤ {target.max_accuracy_loss:g}.
The measured numbers in `manifest.json` were taken on the planning host (see `measured.host`): a
proxy for this device. `bundle verify` re-times the model here.
"""


def _file_table(folder: Path) -> dict[str, dict[str, Any]]:
    table = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in (MANIFEST_NAME,):
            continue
        table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


def _archive(folder: Path) -> Path:
    archive = folder.with_name(folder.name + ".tar.gz")
    tmp = archive.with_name(archive.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    os.replace(tmp, archive)
    return archive


def tool_versions() -> dict[str, str]:
    import cv2
    import onnx
    import onnxruntime

    from visionpipe._version import __version__

    versions = {
        "visionpipe": __version__,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
    try:
        import onnxconverter_common

        versions["onnxconverter-common"] = onnxconverter_common.__version__
    except ImportError:
        pass
    try:
        import openvino

        versions["openvino"] = openvino.get_version()
    except ImportError:
        pass
    for package in ("ncnn", "pnnx"):  # by metadata: importing pnnx would import torch
        version = _package_version(package)
        if version is not None:
            versions[package] = version
    return versions


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["BundleError", "BundleResult", "tool_versions", "write_bundle"]
