"""Decoders, one module per output family, and the registry that finds the one a model needs.

A family registers itself: every module of this package is imported here and its
:class:`Decoder` subclasses are registered under their ``family`` and ``aliases``, so a new
built-in family is one new file. From outside visionpipe a family is added by

* :func:`register_decoder` (``register_decoder(MyDecoder)``, or as a class decorator);
* an entry point in the ``visionpipe.decoders`` group of an installed package
  (``[project.entry-points."visionpipe.decoders"] mydet = "my_pkg.decoders:MyDecoder"``), found the
  first time a family is looked up;
* a spec naming the class by import path: ``decoder: {class: "my_pkg.decoders:MyDecoder"}``.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Sequence
from typing import Any

from visionpipe.errors import LayoutMismatch, SpecError, UnknownOutputLayoutError, first_line
from visionpipe.models.backend import TensorInfo
from visionpipe.models.decoders.base import (
    ULTRALYTICS_INPUT,
    Candidates,
    DecodeParams,
    Decoder,
    FamilyPreset,
    grid_points,
    select_scores,
)

ENTRY_POINT_GROUP = "visionpipe.decoders"

DECODERS: dict[str, type[Decoder]] = {}
FAMILY_ALIASES: dict[str, str] = {}
_entry_points_loaded = False


def register_decoder(cls: type[Decoder], *, replace: bool = False) -> type[Decoder]:
    """Register a decoder class under its ``family`` and ``aliases``; usable as a class decorator.

    A name already taken by another class is refused unless ``replace=True``.

    Example::

        @register_decoder
        class MyDecoder(Decoder):
            family = "mydet"
            ...
    """
    if not (isinstance(cls, type) and issubclass(cls, Decoder)):
        raise SpecError(f"{cls!r} is not a visionpipe Decoder subclass")
    family = getattr(cls, "family", None)
    if not isinstance(family, str) or not family.strip():
        raise SpecError(f"decoder {cls.__name__} declares no family name")
    name = family.lower().strip()
    names = [name, *(a.lower().strip() for a in cls.aliases)]
    if not replace:
        for taken in names:
            owner = DECODERS.get(FAMILY_ALIASES.get(taken, taken))
            if owner is not None and owner is not cls:
                raise SpecError(
                    f"decoder family name {taken!r} is taken by {owner.__module__}.{owner.__qualname__}; "
                    "pass replace=True to replace it"
                )
    DECODERS[name] = cls
    for alias in names[1:]:
        FAMILY_ALIASES[alias] = name
    return cls


def canonical_family(family: str) -> str:
    name = family.lower().strip()
    if name not in DECODERS and name not in FAMILY_ALIASES:
        load_entry_points()
    return FAMILY_ALIASES.get(name, name)


def decoder_class(family: str | None = None, class_path: str | None = None) -> type[Decoder]:
    """The decoder class of a family name (or alias), or the class at ``"module:Class"``."""
    if class_path is not None:
        return import_decoder(class_path)
    if family is None:
        raise SpecError("name a decoder family or a decoder class")
    name = canonical_family(family)
    if name not in DECODERS:
        raise UnknownOutputLayoutError(f"unknown decoder family {family!r}", [], sorted(DECODERS))
    return DECODERS[name]


def import_decoder(class_path: str) -> type[Decoder]:
    """The decoder class named ``"package.module:Class"`` (or ``"package.module.Class"``)."""
    module_name, sep, class_name = class_path.partition(":")
    if not sep:
        module_name, _, class_name = class_path.rpartition(".")
    if not module_name or not class_name:
        raise SpecError(f"decoder class {class_path!r} must look like 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"cannot import decoder module {module_name!r} for {class_path!r}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Decoder)):
        raise SpecError(f"{class_path!r} is not a visionpipe Decoder subclass")
    return cls


def load_entry_points() -> None:
    """Register the decoders of installed plugins (group ``visionpipe.decoders``), once.

    A plugin that fails to import is reported as a warning and skipped: one broken package must
    not stop every other model from loading.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
            if cls not in DECODERS.values():
                register_decoder(cls)
        except Exception as exc:  # a plugin's own bug: name it and carry on
            warnings.warn(f"decoder plugin {entry.name!r} ({entry.value}) was skipped: {exc}", stacklevel=2)


def available_decoders() -> dict[str, type[Decoder]]:
    """Every registered family, plugins included."""
    load_entry_points()
    return dict(DECODERS)


def build_decoder(
    family: str | type[Decoder],
    outputs: Sequence[TensorInfo],
    input_hw: tuple[int, int],
    options: dict[str, Any] | None = None,
) -> Decoder:
    """The decoder of ``family`` (a name or a class) bound to these outputs, or a typed error that says why not."""
    shapes = [o.shape for o in outputs]
    if isinstance(family, str):
        name = canonical_family(family)
        if name not in DECODERS:
            raise UnknownOutputLayoutError(f"unknown decoder family {family!r}", shapes, sorted(DECODERS))
        cls = DECODERS[name]
    else:
        cls, name = family, family.family
    options = dict(options or {})
    _check_options(options)
    try:
        return cls(outputs, input_hw, **options)
    except LayoutMismatch as exc:
        raise UnknownOutputLayoutError(f"outputs do not fit family {name!r}: {exc}", shapes, sorted(DECODERS)) from None
    except (TypeError, ValueError, ZeroDivisionError, IndexError) as exc:  # options of the wrong kind
        raise SpecError(f"invalid decoder options for {name} {options}: {first_line(exc)}") from None


def _check_options(options: dict[str, Any]) -> None:
    """Strides that are not positive integers are refused (zeros divide, text multiplies)."""
    strides = options.get("strides")
    if strides is not None and (
        not isinstance(strides, (list, tuple))
        or not strides
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in strides)
    ):
        raise SpecError(f"decoder.strides must be a list of positive integers, got {strides!r}")


def matching_families(outputs: Sequence[TensorInfo], input_hw: tuple[int, int]) -> list[str]:
    """Every family whose decoder accepts these outputs with default options."""
    matches = []
    for name, cls in available_decoders().items():
        try:
            cls(outputs, input_hw)
        except LayoutMismatch:
            continue
        except Exception:  # a plugin that fails on foreign outputs rather than saying they do not fit
            continue
        matches.append(name)
    return matches


def _register_builtins() -> None:
    """Import every module of this package and register the decoder families defined in each."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Decoder)
                and value.__module__ == module.__name__
                and isinstance(getattr(value, "family", None), str)
            ):
                register_decoder(value)


_register_builtins()

__all__ = [
    "DECODERS",
    "ENTRY_POINT_GROUP",
    "FAMILY_ALIASES",
    "ULTRALYTICS_INPUT",
    "Candidates",
    "DecodeParams",
    "Decoder",
    "FamilyPreset",
    "LayoutMismatch",
    "available_decoders",
    "build_decoder",
    "canonical_family",
    "decoder_class",
    "grid_points",
    "import_decoder",
    "load_entry_points",
    "matching_families",
    "register_decoder",
    "select_scores",
]
