"""The README's plugin decoder (YOLOX's decoding copied under another name, written outside the
package) is taken from the README as written, loaded by a spec naming its class, and evaluated
with ``visionpipe eval``: it must score exactly what the built-in ``yolox`` decoder scores."""

from __future__ import annotations

import json
import re

import pytest

from tests.cli.helpers import describe
from tests.conftest import REPO

GT = "coco/annotations/instances_val2017_dev64.json"


def readme_block(language: str, first_line: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(rf"```{language}\n({re.escape(first_line)}.*?)\n```", text, flags=re.S)
    assert len(blocks) == 1, f"the README must hold one {language} block starting {first_line!r}"
    return blocks[0] + "\n"


@pytest.mark.real
def test_readme_plugin_loaded_by_spec_scores_like_the_builtin_decoder(cli, asset, tmp_path):
    (tmp_path / "my_decoders.py").write_text(readme_block("python", "# my_decoders.py"))
    spec = readme_block("yaml", "# grid.yaml").replace(
        "yolox_nano_416_coco.onnx", str(asset("models/yolox_nano_416_coco.onnx"))
    )
    (tmp_path / "grid.yaml").write_text(spec)
    (tmp_path / "builtin.yaml").write_text(f"model: {asset('models/yolox_nano_416_coco.onnx')}\nfamily: yolox\n")
    images, annotations = asset("coco/images/val2017"), asset(GT)

    scores = {}
    for name in ("grid", "builtin"):
        proc = cli("eval", "--model", f"{name}.yaml", "--images", images, "--annotations", annotations,
                   "--batch-size", "4", "--quiet", cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, describe(proc)
        scores[name] = json.loads(proc.stdout)
    plugin, builtin = scores["grid"], scores["builtin"]
    assert plugin["images"] == builtin["images"] == 64
    numbers = {k: v for k, v in builtin.items() if isinstance(v, (int, float))}
    assert numbers and {k: plugin[k] for k in numbers} == numbers
    assert plugin["per_class_ap"] == builtin["per_class_ap"]
    assert min(numbers.values()) >= 0 and any(0.3 < v < 0.7 for v in numbers.values())
