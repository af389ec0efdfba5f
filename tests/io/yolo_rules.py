"""An independent check of YOLO detection datasets, written from the rules Ultralytics' dataset
loader applies (``ultralytics/data/utils.py``: ``verify_image_label`` for each label file,
``check_det_dataset`` for ``data.yaml``). Ultralytics itself is too heavy to install for the
tests; these are its published rules, re-stated here and not taken from visionpipe's code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml


class RejectedLabel(AssertionError):
    pass


def check_data_yaml(path: Path) -> dict[int, str]:
    """``data.yaml`` must be a mapping with ``train`` and ``val`` and ``names`` (a list, or a dict
    keyed 0..nc-1); ``nc``, when present, must equal the number of names. Returns id -> name."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RejectedLabel(f"{path} is not a mapping")
    for key in ("train", "val"):
        if key not in data:
            raise RejectedLabel(f"{path}: '{key}:' key missing")
    if "names" not in data:
        raise RejectedLabel(f"{path}: 'names' missing")
    names = data["names"]
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or sorted(names) != list(range(len(names))):
        raise RejectedLabel(f"{path}: names must be a list or a dict keyed 0..n-1, got {names!r}")
    if "nc" in data and data["nc"] != len(names):
        raise RejectedLabel(f"{path}: nc={data['nc']} but {len(names)} names")
    return {int(k): str(v) for k, v in names.items()}


def check_label_file(path: Path, num_classes: int) -> np.ndarray:
    """The rows of one label file, or :class:`RejectedLabel` with Ultralytics' reason. An empty
    file is a background image (accepted)."""
    lines = [line.split() for line in path.read_text(encoding="utf-8").strip().splitlines() if len(line)]
    if not lines:
        return np.zeros((0, 5), np.float32)
    try:
        rows = np.array(lines, dtype=np.float32)
    except ValueError as exc:  # ragged or non-numeric
        raise RejectedLabel(f"{path}: {exc}") from None
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise RejectedLabel(f"{path}: labels require 5 columns, {rows.shape[-1]} columns detected")
    if rows[:, 1:].max() > 1:
        raise RejectedLabel(f"{path}: non-normalized or out of bounds coordinates")
    if rows.min() < 0:
        raise RejectedLabel(f"{path}: negative label values")
    if rows[:, 0].max() >= num_classes:
        raise RejectedLabel(f"{path}: label class {int(rows[:, 0].max())} exceeds dataset class count {num_classes}")
    if np.any(rows[:, 0] != np.round(rows[:, 0])):
        raise RejectedLabel(f"{path}: class ids must be whole numbers")
    return rows
