"""I/O at the edges: safe image decoding now; sources, sinks and formats next."""

from visionpipe.io.images import (
    DEFAULT_LIMITS,
    DecodeLimits,
    ImageInput,
    decode_image,
    describe_source,
)

__all__ = ["DEFAULT_LIMITS", "DecodeLimits", "ImageInput", "decode_image", "describe_source"]
