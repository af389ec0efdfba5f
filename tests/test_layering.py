"""The layering of ../shared/DESIGN.md holds: no module imports a higher layer, and no import cycles.

Imports are read with ``ast`` from the source files (nothing is imported), including imports inside
functions: a lazy import from a lower layer to a higher one is still an upward dependency.

Every top-level module or package of ``visionpipe`` must have a layer below; a new one fails the
test until it is given one, so new code is checked from the day it lands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "visionpipe"

# Higher numbers may import lower (or equal) ones, never the reverse. Same-layer imports between
# different top-level parts are allowed; cycles between modules are not (tested separately).
# Where DESIGN.md draws io/ below detections.py, the code teaches otherwise: the writers and the
# annotator speak Detections, so io/ sits just above it (image decoding itself imports nothing).
LAYERS: dict[str, int] = {
    "errors": 0,
    "_version": 0,
    # process-level utilities that import nothing of visionpipe (signals, native libraries' stderr)
    "interrupt": 0,
    "native_output": 0,
    "data": 0,
    "geometry": 1,
    "adapters": 1,  # conversions to other libraries; Detections' to_*/from_* methods delegate to it
    "detections": 2,
    # Result.plot draws and reads with io.annotate and io.images, so results sits beside io
    "results": 4,
    "io": 4,
    "preprocess": 5,
    "postprocess": 5,
    "models": 6,
    "pipeline": 7,
    "evaluation": 8,
    "ensemble_tune": 9,
    "video": 9,
    "optimize": 9,
    "monitor": 9,
    "deploy": 10,
    # a detect run over image files into an output folder (uses monitor and evaluation)
    "detect_run": 10,
    "serve": 11,
    "distributed": 11,
    "cli": 12,
    # the package's front doors re-export from everywhere
    "__init__": 99,
    "__main__": 99,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def top_level_part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The visionpipe modules a file imports (``from pkg import mod`` counts as the module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    # imports under ``if TYPE_CHECKING:`` are annotations, not dependencies: nothing runs them
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target for alias in node.names]
        else:
            continue
        found.update(name for name in names if name == "visionpipe" or name.startswith("visionpipe."))
    found.discard(this)
    return found


def source_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    known = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, known) for p in files}


def test_every_part_of_the_package_has_a_layer():
    parts = {top_level_part(m) for m in import_graph()}
    missing = sorted(parts - set(LAYERS))
    assert not missing, f"give {missing} a layer in LAYERS of tests/test_layering.py (see DESIGN.md)"


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, imports in import_graph().items():
        mine = LAYERS.get(top_level_part(module))
        for target in imports:
            theirs = LAYERS.get(top_level_part(target)) if target != "visionpipe" else 99
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def without_package_doors(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges into package ``__init__`` modules from their own submodules' view of siblings.

    A package's ``__init__`` re-exports its submodules, so ``pkg.sub -> pkg`` (importing a sibling
    through the package) plus ``pkg -> pkg.sub`` is not a real cycle between two concerns. Those
    edges are resolved to the submodules the package re-exports, which keeps real cycles visible.
    """
    resolved: dict[str, set[str]] = {}
    for module, imports in graph.items():
        targets = set()
        for target in imports:
            if target in graph and module.startswith(target + ".") and target != "visionpipe":
                targets.update(t for t in graph[target] if t != module and not t.startswith(module + "."))
            else:
                targets.add(target)
        resolved[module] = targets
    return resolved


def test_no_import_cycles():
    graph = import_graph()
    graph.pop("visionpipe", None)  # the front door imports everything and nothing imports it back
    cycles = find_cycles(without_package_doors(graph))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert find_cycles(graph) == expected


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    package = tmp_path / "visionpipe"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pipeline.py").write_text("")
    (package / "models" / "__init__.py").write_text("")
    (package / "models" / "loader.py").write_text(
        "def f():\n    from visionpipe.pipeline import Pipeline\n\nfrom . import spec\n"
    )
    (package / "models" / "spec.py").write_text("")
    monkeypatch.setattr(__import__(__name__, fromlist=["SRC"]), "SRC", package)
    graph = import_graph()
    assert graph["visionpipe.models.loader"] == {"visionpipe.pipeline", "visionpipe.models.spec"}


def test_every_typed_error_lives_in_errors_and_derives_from_visionpipe_error():
    """``except VisionpipeError`` catches everything visionpipe raises on purpose."""
    import visionpipe.errors

    defined_elsewhere = []
    for path in source_files():
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id == "LayoutMismatch")
                for b in node.bases
            ):
                defined_elsewhere.append(f"{module_name(path)}.{node.name}")
    assert not defined_elsewhere, f"typed errors outside errors.py: {defined_elsewhere}"
    errors = [
        obj for obj in vars(visionpipe.errors).values() if isinstance(obj, type) and issubclass(obj, BaseException)
    ]
    assert len(errors) > 10
    assert all(issubclass(e, visionpipe.errors.VisionpipeError) for e in errors)
