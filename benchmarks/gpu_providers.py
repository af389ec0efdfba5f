"""The optimized variants on a GPU: ONNX Runtime's CUDA (and, where installed, TensorRT) providers.

Give it the folders `optimize_variants.py` wrote (fp32 original copied in beside its variants) and
the devices to try; every (model, device) pair runs in its own process, and a device this
onnxruntime build lacks is reported, not skipped silently::

    python benchmarks/gpu_providers.py --variants bench-optimize/yolox bench-optimize/nanodet --devices cuda,tensorrt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ASSETS, header

VARIANT_TAGS = ("_int8", "_fp16", "_pruned", "_dynamic_batch", "_slim")


def is_variant(path: Path) -> bool:
    return any(tag in path.stem for tag in VARIANT_TAGS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants",
        type=Path,
        nargs="+",
        required=True,
        help="Folders of .onnx variants with their sidecar specs; the file without a variant suffix is the baseline.",
    )
    parser.add_argument("--devices", default="cuda,tensorrt")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("bench-gpu"))
    args = parser.parse_args()

    import onnxruntime

    from visionpipe.optimize.benchmark import BenchmarkConfig, benchmark_models

    print(header("optimized variants on the GPU", vars(args)))
    available = onnxruntime.get_available_providers()
    print(f"onnxruntime providers: {available}")
    val = sorted((ASSETS / "coco/images/val2017").glob("*.jpg"))
    wanted = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    for device in args.devices.split(","):
        if wanted[device] not in available:
            print(f"\n## {device}: not run — this onnxruntime has no {wanted[device]}\n")
            continue
        config = BenchmarkConfig(
            images=[str(p) for p in val],
            annotations=str(ASSETS / "coco/annotations/instances_val2017_dev64.json"),
            batch_sizes=(1, 8),
            repeats=args.repeats,
            device=device,
            timeout=600,
        )
        for folder in args.variants:
            models = sorted(folder.glob("*.onnx"), key=lambda p: (is_variant(p), p.name))  # fp32 is the baseline
            report = benchmark_models(models, config, names=[p.stem for p in models])
            report.write(args.out / device / folder.name)
            print(f"\n## {folder.name} on {device}\n\n{report.to_markdown()}\n")
            for row in report.rows:  # what each session really ran on (a provider can fall back)
                print(f"{row.name}: providers {row.providers}, error {row.error}")


if __name__ == "__main__":
    main()
