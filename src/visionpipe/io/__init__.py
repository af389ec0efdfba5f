"""I/O at the edges: safe image decoding, input sources, output formats and image annotation."""

from visionpipe.io.images import (
    DEFAULT_LIMITS,
    DecodeLimits,
    ImageInput,
    decode_image,
    describe_source,
)

__all__ = ["DEFAULT_LIMITS", "DecodeLimits", "ImageInput", "decode_image", "describe_source"]
