"""The README's set-up commands are the ones CI runs, so they stay true."""

from __future__ import annotations

import re

from tests.conftest import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_commands = [c for c in readme_commands() if "pytest" in c]
    assert len(test_commands) == 1, "the README must give exactly one test command"
    ci_lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_commands[0].strip() in [line.strip() for line in ci_lines]


def test_package_is_licensed_apache_2():
    assert "Apache License" in (REPO / "LICENSE").read_text(encoding="utf-8")
    assert 'license = "Apache-2.0"' in (REPO / "pyproject.toml").read_text(encoding="utf-8")


def test_readme_python_example_runs(assets, monkeypatch, capsys):
    """The README's Python example is executed as written (from the repository root)."""
    blocks = re.findall(r"```python\n(.+?)\n```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    monkeypatch.chdir(REPO)
    for block in blocks:
        exec(compile(block.replace('Path("../shared/assets")', f"Path({str(assets)!r})"), "README.md", "exec"), {})
    assert "images," in capsys.readouterr().out
