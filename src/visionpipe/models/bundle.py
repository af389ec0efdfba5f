"""A deployment bundle read back: its manifest, its checksums, and the spec that loads its model.

A bundle is a folder written by :mod:`visionpipe.deploy.bundle`. Its ``manifest.json`` lists the
sha256 of every other file and carries its own digest (``manifest_sha256``: the sha256 of the
manifest's bytes with that digest's 64 hex characters replaced by zeros), so one changed byte in any
file, the manifest included, is caught and named. Loading goes through :func:`bundle_spec`, which
checks every checksum before the model file is opened::

    Pipeline("bundle/")          # refuses a tampered bundle with a BundleIntegrityError naming the file

This module only reads; it sits below ``deploy/`` so that the loader can open bundles without
importing the layer that writes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from visionpipe.errors import BundleIntegrityError, ModelLoadError

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"  # optional ed25519 signature of manifest.json's bytes
DIGEST_KEY = "manifest_sha256"
ZERO_DIGEST = "0" * 64
_DIGEST_FIELD = re.compile(rb'"manifest_sha256"\s*:\s*"([0-9a-f]{64})"')
_CHUNK = 1 << 20


def is_bundle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a bundle manifest."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST_NAME).is_file()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def seal_manifest(text: str) -> bytes:
    """Manifest JSON text (holding ``"manifest_sha256": "000…0"``) with its own digest filled in."""
    raw = text.encode("utf-8")
    match = _DIGEST_FIELD.search(raw)
    if match is None or match.group(1) != ZERO_DIGEST.encode():
        raise ValueError("the manifest text must hold a zeroed manifest_sha256 field")
    digest = hashlib.sha256(raw).hexdigest().encode()
    return raw[: match.start(1)] + digest + raw[match.end(1) :]


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the bundle in ``folder`` after checking its own digest (not the other files)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read bundle manifest {path}: {exc.strerror or exc}") from None
    match = _DIGEST_FIELD.search(raw)
    if match is None:
        raise BundleIntegrityError(
            f"bundle {folder}: {MANIFEST_NAME} has no valid {DIGEST_KEY} (altered)", [MANIFEST_NAME]
        )
    zeroed = raw[: match.start(1)] + ZERO_DIGEST.encode() + raw[match.end(1) :]
    if hashlib.sha256(zeroed).hexdigest() != match.group(1).decode():
        raise BundleIntegrityError(
            f"bundle {folder}: {MANIFEST_NAME} was altered (its digest does not match)", [MANIFEST_NAME]
        )
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # digest matched, so it was written so
        raise BundleIntegrityError(
            f"bundle {folder}: {MANIFEST_NAME} is not valid JSON: {exc}", [MANIFEST_NAME]
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ModelLoadError(f"bundle {folder}: {MANIFEST_NAME} lists no files")
    return manifest


def check_files(folder: str | os.PathLike, manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(file, problem) for every listed file that is missing, unsafe or changed; empty when all match."""
    folder = Path(folder).resolve()
    problems = []
    for name, entry in sorted(manifest["files"].items()):
        path = (folder / name).resolve()
        if folder not in path.parents:
            problems.append((name, "lies outside the bundle"))
            continue
        if not path.is_file():
            problems.append((name, "is missing"))
            continue
        want = entry.get("sha256") if isinstance(entry, dict) else None
        if want is None or sha256_file(path) != want:
            problems.append((name, "does not match its sha256 in the manifest (changed)"))
    return problems


def verified_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest, once every listed file matches its checksum; else :class:`BundleIntegrityError`."""
    manifest = read_manifest(folder)
    problems = check_files(folder, manifest)
    if problems:
        listing = "; ".join(f"{name} {problem}" for name, problem in problems)
        raise BundleIntegrityError(f"bundle {folder} is not intact: {listing}", [name for name, _ in problems])
    return manifest


def bundle_spec(folder: str | os.PathLike) -> dict[str, Any]:
    """The model spec (a dict, the model path resolved) of a bundle whose files all check out."""
    folder = Path(folder)
    manifest = verified_manifest(folder)
    spec = manifest.get("spec")
    if not isinstance(spec, dict) or "model" not in spec:
        raise ModelLoadError(f"bundle {folder}: {MANIFEST_NAME} has no model spec")
    return {**spec, "model": str(folder / spec["model"])}


__all__ = [
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "BundleIntegrityError",
    "bundle_spec",
    "check_files",
    "is_bundle",
    "read_manifest",
    "seal_manifest",
    "sha256_file",
    "verified_manifest",
]
