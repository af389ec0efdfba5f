"""Each family's preset, read from its decoder class (``Decoder.preset``): kept for code that looks
presets up by family name. The presets themselves live beside each family's decoding, in
:mod:`visionpipe.models.decoders`.

The score threshold is a production default; evaluation passes its own (e.g. 0.01).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from visionpipe.models.decoders import DECODERS, canonical_family
from visionpipe.models.decoders.base import ULTRALYTICS_INPUT, FamilyPreset


class _Presets(Mapping[str, FamilyPreset]):
    """family name (or alias) -> its decoder's preset, over the live decoder registry."""

    def __getitem__(self, family: str) -> FamilyPreset:
        return DECODERS[canonical_family(family)].preset

    def __iter__(self) -> Iterator[str]:
        return iter(DECODERS)

    def __len__(self) -> int:
        return len(DECODERS)

    def __contains__(self, family: object) -> bool:
        return isinstance(family, str) and canonical_family(family) in DECODERS


PRESETS: Mapping[str, FamilyPreset] = _Presets()

# Used when neither the model nor the spec fixes the input size (dynamic height and width).
DEFAULT_INPUT_SIZE = (640, 640)

__all__ = ["DEFAULT_INPUT_SIZE", "PRESETS", "ULTRALYTICS_INPUT", "FamilyPreset"]
