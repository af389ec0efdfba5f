"""``visionpipe bundle verify``: is this bundle intact, does its model still compute what it did, and is
it fast enough here? Meant to run on the device itself.

Checks, in order (later ones are skipped when the files are not intact, since nothing else can be
trusted then):

1. ``manifest.json``'s own digest, then the sha256 of every file it lists; files it does not list;
2. the ed25519 signature, when a public key is given;
3. the golden pair: the model's raw outputs on the stored input tensor, within the manifest's
   tolerance; and visionpipe's detections on the stored image against the stored detections (1e-4);
4. latency: p50/p90 of the model alone on the golden input at the target's thread count, against the
   target's limit (fails when p90 is over it), and next to the planner's measured numbers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionpipe.errors import BundleIntegrityError, VisionpipeError, first_line
from visionpipe.models.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    bundle_spec,
    check_files,
    read_manifest,
)

DETECTION_TOLERANCE = 1e-4


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    files: list[str] = field(default_factory=list)  # the bundle files a failure is about


@dataclass
class VerifyReport:
    bundle: Path
    checks: list[Check] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str, files: list[str] | None = None) -> None:
        self.checks.append(Check(name, ok, detail, files or []))

    def to_text(self) -> str:
        lines = [f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        lines.append(f"bundle {self.bundle}: {'verified' if self.ok else 'NOT verified'}")
        return "\n".join(lines)


def verify_bundle(
    bundle: str | os.PathLike,
    *,
    public_key: str | os.PathLike | None = None,
    latency_runs: int = 30,
    warmup: int = 3,
    threads: int | None = None,
    check_latency: bool = True,
) -> VerifyReport:
    """Run every check; never raises for what it finds (that goes in the report)."""
    folder = Path(bundle)
    report = VerifyReport(folder)
    try:
        manifest = read_manifest(folder)
    except BundleIntegrityError as exc:
        report.add("manifest", False, str(exc), exc.files)
        return report
    except VisionpipeError as exc:
        report.add("manifest", False, str(exc), [MANIFEST_NAME])
        return report
    report.add("manifest", True, f"{MANIFEST_NAME} digest matches")

    problems = check_files(folder, manifest)
    for name, problem in problems:
        report.add(f"file {name}", False, f"{name} {problem}", [name])
    listed = set(manifest["files"]) | {MANIFEST_NAME, SIGNATURE_NAME}
    extra = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).as_posix() not in listed and "__pycache__" not in p.parts
    )
    for name in extra:
        report.add(f"file {name}", False, f"{name} is not listed in the manifest (added)", [name])
    if problems or extra:
        return report
    report.add("checksums", True, f"{len(manifest['files'])} files match their sha256")

    if public_key is not None:
        from visionpipe.deploy.signing import SignatureError, verify_signature

        try:
            verify_signature(folder, public_key)
            report.add("signature", True, f"{SIGNATURE_NAME} verifies with {public_key}")
        except SignatureError as exc:
            report.add("signature", False, str(exc), [SIGNATURE_NAME])
    elif (folder / SIGNATURE_NAME).is_file():
        report.add("signature", True, "signed, not checked (give --public-key to check it)")

    target = manifest.get("target", {})
    if threads is None:  # the target's count, capped at this machine's cores
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        wanted = int(target.get("threads", 0))
        threads = min(wanted, cores) if wanted else 0
    wanted_threads = threads
    try:
        model = _load(folder, wanted_threads)
    except VisionpipeError as exc:
        report.add("load", False, f"the model does not load: {first_line(exc)}", [manifest["model"]["file"]])
        return report
    _check_golden(report, folder, manifest, model)
    if check_latency:
        _check_latency(report, folder, manifest, model, latency_runs, warmup, wanted_threads)
    return report


def _load(folder: Path, threads: int):
    from visionpipe.models.loader import load_model

    return load_model(bundle_spec(folder), intra_op_threads=threads)


def _check_golden(report: VerifyReport, folder: Path, manifest: dict[str, Any], model) -> None:
    golden = manifest["golden"]
    batch = np.load(folder / golden["input"])
    got = model.backend.forward(batch)
    want = np.load(folder / golden["outputs"])
    worst = 0.0
    failed = []
    for index, name in enumerate(golden["output_names"]):
        ref = want[name]
        out = np.asarray(got[index]).reshape(ref.shape)
        worst = max(worst, float(np.abs(out - ref).max()) if ref.size else 0.0)
        if not np.allclose(out, ref, rtol=golden["rtol"], atol=golden["atol"]):
            failed.append(name)
    report.add(
        "golden outputs",
        not failed,
        f"max |difference| {worst:.3g} (tolerance atol {golden['atol']:g} + rtol {golden['rtol']:g})"
        + (f"; out of tolerance: {', '.join(failed)}" if failed else ""),
        [golden["outputs"]] if failed else [],
    )

    import json

    from visionpipe.pipeline import Pipeline

    stored = json.loads((folder / golden["detections"]).read_text(encoding="utf-8"))
    with Pipeline(model, concurrency=1) as pipe:
        found = pipe(str(folder / golden["image"]))
    same = (
        len(found) == len(stored["confidence"])
        and np.allclose(found.xyxy, np.asarray(stored["xyxy"]).reshape(-1, 4), atol=DETECTION_TOLERANCE)
        and np.allclose(found.confidence, stored["confidence"], atol=DETECTION_TOLERANCE)
        and np.array_equal(found.class_id, np.asarray(stored["class_id"], dtype=found.class_id.dtype))
    )
    report.add(
        "golden detections",
        bool(same),
        f"{len(found)} detections on {golden['image']}, stored {len(stored['confidence'])}"
        + ("" if same else f" (differ beyond {DETECTION_TOLERANCE:g})"),
        [] if same else [golden["detections"]],
    )


def _check_latency(
    report: VerifyReport, folder: Path, manifest: dict[str, Any], model, runs: int, warmup: int, threads: int
) -> None:
    batch = np.load(folder / manifest["golden"]["input"])
    for _ in range(warmup):
        model.backend.forward(batch)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        model.backend.forward(batch)
        times.append((time.perf_counter() - start) * 1000.0)
    p50, p90 = (float(v) for v in np.percentile(times, [50, 90]))
    limit = manifest.get("target", {}).get("max_latency_ms")
    measured = manifest.get("measured", {})
    planned = measured.get("latency_p90_ms")
    report.latency = {"p50_ms": p50, "p90_ms": p90, "runs": len(times), "threads": threads, "planned_p90_ms": planned}
    ratio = f"; planned on the host: p90 {planned:.1f} ms (here/planned {p90 / planned:.2f})" if planned else ""
    if limit is None:
        report.add("latency", True, f"p50 {p50:.1f} ms, p90 {p90:.1f} ms (no limit in the manifest){ratio}")
        return
    report.add(
        "latency",
        p90 <= limit,
        f"p50 {p50:.1f} ms, p90 {p90:.1f} ms at {threads or 'all'} threads, limit {limit:g} ms{ratio}",
    )


__all__ = ["Check", "VerifyReport", "verify_bundle"]
