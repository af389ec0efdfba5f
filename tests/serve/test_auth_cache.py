"""API keys, rate limits, the bind rule and the response cache, without a server."""

from __future__ import annotations

import numpy as np
import pytest

from visionpipe.errors import ServeConfigError
from visionpipe.serve.auth import ApiKeys, RateLimiter, is_loopback, new_key, presented_key
from visionpipe.serve.cache import ResponseCache, body_key, content_key
from visionpipe.serve.config import ServeConfig


def test_keys_are_stored_hashed_and_identified(tmp_path):
    key, line = new_key("alice")
    other, other_line = new_key("bob")
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\n{line}\n\n{other_line}\n")
    assert key not in keys_file.read_text()
    keys = ApiKeys.from_file(keys_file)
    assert keys.identify(key) == "alice" and keys.identify(other) == "bob"
    assert keys.identify(key + "x") is None and keys.identify("") is None and keys.identify(None) is None
    assert presented_key({"authorization": f"Bearer {key}"}) == key
    assert presented_key({"x-api-key": key}) == key
    assert presented_key({"authorization": "Basic abc"}) is None


@pytest.mark.parametrize("text", ["alice plain-key\n", "alice sha256:xyz\n", "", "a b c\n"])
def test_bad_keys_files_are_refused(tmp_path, text):
    keys_file = tmp_path / "keys"
    keys_file.write_text(text)
    with pytest.raises(ServeConfigError):
        ApiKeys.from_file(keys_file)


def test_non_loopback_bind_needs_keys(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.com")
    ServeConfig(host="127.0.0.1").check_bind()
    for host in ("0.0.0.0", "::", "192.168.1.10"):
        with pytest.raises(ServeConfigError, match="refusing to listen"):
            ServeConfig(host=host).check_bind()
    ServeConfig(host="0.0.0.0", api_keys_file=tmp_path / "keys").check_bind()


def test_rate_limit_per_key_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(rate=2, burst=2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    wait = limiter.acquire("a")
    assert wait == pytest.approx(0.5)
    assert limiter.acquire("b") == 0  # another key has its own bucket
    now[0] += 0.5
    assert limiter.acquire("a") == 0


def test_cache_is_lru_with_ttl():
    now = [0.0]
    cache = ResponseCache(max_entries=2, ttl=10, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)  # evicts b
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    now[0] += 10
    assert cache.get("a") is None and len(cache) == 1
    assert ResponseCache(max_entries=0).get("x") is None
    assert body_key(b"ab", "c") != body_key(b"a", "bc")


def test_content_key_names_what_the_model_would_see():
    jpeg, other = b"\xff\xd8 one photo", b"\xff\xd8 another photo"
    assert content_key([jpeg]) == content_key([bytearray(jpeg)])
    assert content_key([jpeg]) != content_key([other])
    assert content_key([jpeg, other]) != content_key([other, jpeg])  # order is part of the answer
    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    flipped = frame[..., ::-1]  # a view, not contiguous: read as the pixels it shows
    assert content_key([flipped]) == content_key([flipped.copy()])
    assert content_key([flipped]) != content_key([frame])
    assert content_key([frame]) != content_key([frame.reshape(6, 4, 3)])  # same bytes, other shape
    assert content_key([frame.tobytes()]) != content_key([frame])  # a file is not a frame
    assert content_key(["photo.jpg"]) is None  # anything else is not cached
