"""I/O at the edges: safe image decoding now; sources, sinks and formats next."""

from visionpipe.io.images import ImageInput, decode_image, describe_source

__all__ = ["ImageInput", "decode_image", "describe_source"]
