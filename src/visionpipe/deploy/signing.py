"""Optional ed25519 signature of a bundle's manifest (extra ``deploy``: the ``cryptography`` package).

The manifest holds the sha256 of every other file, so signing its bytes signs the whole bundle.
``manifest.sig`` holds the raw 64-byte signature; keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo
public), as ``visionpipe bundle keygen`` writes them.
"""

from __future__ import annotations

import os
from pathlib import Path

from visionpipe.errors import MissingExtraError, OutputFolderError, SignatureError
from visionpipe.models.bundle import MANIFEST_NAME, SIGNATURE_NAME


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise MissingExtraError("cryptography", "deploy", "Signing bundles") from exc
    return serialization, ed25519, InvalidSignature


def generate_keypair(out_dir: str | os.PathLike, name: str = "bundle") -> tuple[Path, Path]:
    """Write ``<name>.key`` (private, mode 600) and ``<name>.pub`` to ``out_dir``.

    An existing key pair is never replaced (there is no ``--exist-ok`` for keys): bundles signed
    with the old key would stop verifying against the new public key, and the old private key would
    be gone. Other files in ``out_dir`` (other key pairs) are left alone.
    """
    serialization, ed25519, _ = _crypto()
    out = Path(out_dir)
    key_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    existing = [str(p) for p in (key_path, pub_path) if p.exists() or p.is_symlink()]
    if existing:
        raise OutputFolderError(
            f"{' and '.join(existing)} already exist: a key pair is never replaced; choose another --name or --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    private = ed25519.Ed25519PrivateKey.generate()
    key_bytes = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    written = []
    try:  # O_EXCL: a file that appeared since the check above is not overwritten either
        for path, data, mode in ((key_path, key_bytes, 0o600), (pub_path, public_bytes, 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(path)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
    except FileExistsError as exc:
        for path in written:  # half a pair is no use
            path.unlink(missing_ok=True)
        raise OutputFolderError(f"{exc.filename} already exists: a key pair is never replaced") from None
    return key_path, pub_path


def sign_manifest(bundle: str | os.PathLike, private_key: str | os.PathLike) -> Path:
    """Sign ``manifest.json``'s bytes; writes ``manifest.sig``."""
    serialization, ed25519, _ = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot read private key {private_key}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{private_key} is not an ed25519 private key")
    bundle = Path(bundle)
    signature = key.sign((bundle / MANIFEST_NAME).read_bytes())
    target = bundle / SIGNATURE_NAME
    target.write_bytes(signature)
    return target


def verify_signature(bundle: str | os.PathLike, public_key: str | os.PathLike) -> None:
    """Raise :class:`SignatureError` unless ``manifest.sig`` is a valid signature of ``manifest.json``."""
    serialization, ed25519, invalid = _crypto()
    try:
        key = serialization.load_pem_public_key(Path(public_key).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot read public key {public_key}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{public_key} is not an ed25519 public key")
    bundle = Path(bundle)
    signature_path = bundle / SIGNATURE_NAME
    if not signature_path.is_file():
        raise SignatureError(f"bundle {bundle} is not signed ({SIGNATURE_NAME} is missing)")
    try:
        key.verify(signature_path.read_bytes(), (bundle / MANIFEST_NAME).read_bytes())
    except invalid:
        raise SignatureError(
            f"bundle {bundle}: {SIGNATURE_NAME} does not verify {MANIFEST_NAME} with {public_key}"
        ) from None


__all__ = ["SignatureError", "generate_keypair", "sign_manifest", "verify_signature"]
