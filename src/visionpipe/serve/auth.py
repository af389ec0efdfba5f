"""API keys and per-key rate limits.

Keys are random tokens made by :func:`new_key`; the server keeps only their SHA-256 (a slow,
salted hash buys nothing for 256-bit random secrets, and would cost every request). A presented key
is hashed and compared with every stored hash through :func:`hmac.compare_digest`, without stopping
at the first match, so timing tells nothing about which hash, or how much of one, matched.

Keys file format, one key per line (``#`` comments and blank lines ignored)::

    NAME sha256:HEX
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from visionpipe.errors import ServeConfigError


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str) -> tuple[str, str]:
    """A fresh key and the line to add to the keys file (which never holds the key itself)."""
    if not name or any(c.isspace() for c in name):
        raise ServeConfigError(f"a key name must be one word, got {name!r}")
    key = "vp_" + secrets.token_urlsafe(32)
    return key, f"{name} {hash_key(key)}"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class StoredKey:
    name: str
    digest: bytes


class ApiKeys:
    """The hashed keys a server accepts."""

    def __init__(self, keys: list[StoredKey]) -> None:
        self.keys = keys

    @classmethod
    def from_file(cls, path: str | Path) -> ApiKeys:
        keys = []
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ServeConfigError(f"cannot read the keys file {path}: {exc.strerror or exc}") from None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].startswith("sha256:") or len(parts[1]) != 7 + 64:
                raise ServeConfigError(
                    f"{path}:{number}: expected 'NAME sha256:HEX' (make one with `visionpipe serve --new-key NAME`)"
                )
            try:
                digest = bytes.fromhex(parts[1][7:])
            except ValueError:
                raise ServeConfigError(f"{path}:{number}: the hash is not hexadecimal") from None
            keys.append(StoredKey(parts[0], digest))
        if not keys:
            raise ServeConfigError(f"{path} holds no keys")
        return cls(keys)

    def identify(self, presented: str | None) -> str | None:
        """The name of the key presented, or None when it matches none."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key in self.keys:  # no early exit
            if hmac.compare_digest(digest, key.digest):
                found = key.name
        return found


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    get = headers.get
    authorization = get("authorization") or ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return get("x-api-key") or None


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second on average, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1, int(rate))
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds until it could."""
        with self._lock:
            now = self.clock()
            tokens, when = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - when) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
