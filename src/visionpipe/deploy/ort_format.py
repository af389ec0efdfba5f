"""ONNX -> ORT format with ONNX Runtime's own converter, plus the operator list for reduced builds.

ORT format is what ONNX Runtime Mobile and minimal builds load: a flatbuffer with the graph already
optimised, so the device does no graph work at start-up. Two optimisation styles, as ORT's
``convert_onnx_models_to_ort`` names them:

* ``fixed`` — every optimisation applied before saving, including fusions into CPU-only kernels
  (FusedConv, QLinearConv, ...). Best for the CPU execution provider.
* ``runtime`` — only basic optimisations applied; the rest are saved as records replayed at load time
  when the CPU provider takes the nodes. NNAPI and CoreML cannot run the CPU-only fused kernels, so
  a target naming either keeps this variant.

The required-operators config (``<stem>.required_operators.config``) is what a reduced ORT build is
compiled with (``build.py --include_ops_by_config``). ``platform="arm"`` leaves out the x86-only
NCHWc layout transform and lets QDQ nodes become int8 kernels, as ORT's tool does for ARM.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from visionpipe.errors import OrtFormatError, first_line

STYLES = ("fixed", "runtime")


@dataclass
class OrtConversion:
    path: Path
    config_path: Path  # the required-operators config for a reduced build
    style: str  # "fixed" or "runtime"
    platform: str
    ort_version: str  # the ONNX Runtime that wrote the file
    format_version: str  # the ORT-format version stored in the file
    required_operators: dict[str, list[str]] = field(default_factory=dict)  # "domain;opset" -> op types


def convert_to_ort(
    source: str | os.PathLike, out_dir: str | os.PathLike, *, style: str = "fixed", platform: str = "arm"
) -> OrtConversion:
    """Write ``<out_dir>/<stem>.ort`` (``<stem>.runtime_opt.ort`` for the runtime style) and its config."""
    import onnxruntime
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    if style not in STYLES:
        raise OrtFormatError(f"unknown ORT optimisation style {style!r}; choose one of {', '.join(STYLES)}")
    source = Path(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = source.stem if style == "fixed" else f"{source.stem}.runtime_opt"
    target, config_target = out_dir / f"{stem}.ort", out_dir / f"{stem}.required_operators.config"
    # the converter writes beside its input and prints progress: give it a private copy and folder
    with tempfile.TemporaryDirectory(prefix="visionpipe-ort-") as tmp:
        work = Path(tmp) / "in"
        work.mkdir()
        shutil.copyfile(source, work / f"{source.stem}.onnx")
        out = Path(tmp) / "out"
        chatter = io.StringIO()
        quiet = logging.getLogger("ort_format_model.utils")  # logs each config file it writes at INFO
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        # the converter's sessions warn that an amd64 (NCHWc) file is hardware specific: we know
        onnxruntime.set_default_logger_severity(3)
        try:
            with contextlib.redirect_stdout(chatter):
                convert_onnx_models_to_ort(
                    work / f"{source.stem}.onnx",
                    output_dir=out,
                    optimization_styles=[OptimizationStyle.Fixed if style == "fixed" else OptimizationStyle.Runtime],
                    target_platform=platform,
                )
        except Exception as exc:
            raise OrtFormatError(f"ORT-format conversion of {source} failed: {first_line(exc)}") from exc
        finally:
            quiet.setLevel(level)
            onnxruntime.set_default_logger_severity(2)
        written = sorted(out.glob("*.ort"))
        configs = sorted(out.glob("*.config"))
        if len(written) != 1 or len(configs) != 1:
            raise OrtFormatError(f"ORT-format conversion of {source} wrote no model: {chatter.getvalue()[-300:]}")
        os.replace(written[0], target)
        os.replace(configs[0], config_target)
    return OrtConversion(
        path=target,
        config_path=config_target,
        style=style,
        platform=platform,
        ort_version=onnxruntime.__version__,
        format_version=ort_format_version(target),
        required_operators=read_required_operators(config_target),
    )


def ort_format_version(path: str | os.PathLike) -> str:
    """The ORT-format version string stored in an ``.ort`` file."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

    data = Path(path).read_bytes()
    if not InferenceSession.InferenceSessionBufferHasIdentifier(data, 0):
        raise OrtFormatError(f"{path} is not an ORT-format model")
    version = InferenceSession.GetRootAs(data, 0).OrtVersion()
    return version.decode() if isinstance(version, bytes) else str(version)


def read_required_operators(config: str | os.PathLike) -> dict[str, list[str]]:
    """``{"ai.onnx;13": ["Conv", ...], ...}`` from a required-operators config file."""
    operators: dict[str, list[str]] = {}
    for line in Path(config).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        domain, opset, ops = line.split(";", 2)
        operators[f"{domain};{opset}"] = sorted(op.split("{")[0] for op in ops.split(",") if op)
    return operators


def onnx_required_operators(path: str | os.PathLike) -> dict[str, list[str]]:
    """The same listing for an ONNX file: its node types per imported domain and opset."""
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    versions = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    operators: dict[str, set[str]] = {}
    for node in model.graph.node:
        domain = node.domain or "ai.onnx"
        operators.setdefault(f"{domain};{versions.get(domain, 1)}", set()).add(node.op_type)
    return {key: sorted(ops) for key, ops in sorted(operators.items())}


__all__ = [
    "OrtConversion",
    "OrtFormatError",
    "convert_to_ort",
    "onnx_required_operators",
    "ort_format_version",
    "read_required_operators",
]
