"""Imports point only downward: walk every module under src/lmlab with `ast` and fail on an import of
a higher layer (DESIGN.md "Layers"). Imports inside functions count too."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lmlab"
# From the bottom; imports within one layer are allowed.
LAYERS = [
    ["errors", "atomic", "runtime"],
    ["data"],
    ["tokenize"],
    ["models"],
    ["io"],
    ["generate"],
    ["train", "evaluate", "embed", "viz"],
    ["bundle", "compare", "chat", "cli", "serve", "__init__", "__main__"],
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def component(module: str) -> str:
    """The layer name of a dotted module under lmlab: lmlab.train.run -> "train", lmlab -> "__init__"."""
    parts = module.split(".")
    assert parts[0] == "lmlab", module
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of_file(path: Path) -> str:
    first = path.relative_to(PACKAGE).parts[0]
    return first[:-3] if first.endswith(".py") else first


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["lmlab", *parts])


def package_of(path: Path) -> str:
    """The package relative imports in `path` resolve against."""
    return module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]


def lmlab_imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import of lmlab in `source`, wherever it is (functions too)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "lmlab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve it against this module's package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lmlab":
                continue
            if target == "lmlab":  # from lmlab import data -> the submodule is the target
                found += [(node.lineno, f"lmlab.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return found


FILES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_known_layer():
    unknown = sorted({layer_of_file(p) for p in FILES} - set(LEVEL))
    assert not unknown, f"add these to LAYERS (and DESIGN.md): {unknown}"
    assert len(FILES) > 10


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_downward(path: Path):
    own = layer_of_file(path)
    upward = []
    for line, target in lmlab_imports(path.read_text(encoding="utf-8"), package_of(path)):
        imported = component(target)
        if imported in LEVEL and LEVEL[imported] > LEVEL[own]:
            upward.append(f"line {line}: {own} (layer {LEVEL[own]}) imports {target} (layer {LEVEL[imported]})")
    assert not upward, "\n".join(upward)


def test_the_checker_sees_every_kind_of_import():
    source = ("import os\n"
              "def f():\n"
              "    from lmlab.cli import main\n"
              "    import lmlab.train.run as run\n"
              "from lmlab import bundle\n"
              "from . import loop\n"
              "from ..models.gpt import GPT\n")
    assert sorted(lmlab_imports(source, "lmlab.generate")) == [
        (3, "lmlab.cli"), (4, "lmlab.train.run"), (5, "lmlab.bundle"), (6, "lmlab.generate"), (7, "lmlab.models.gpt")]
    assert [component(t) for t in ("lmlab.cli", "lmlab.train.run", "lmlab")] == ["cli", "train", "__init__"]
    assert layer_of_file(PACKAGE / "train" / "run.py") == "train" and layer_of_file(PACKAGE / "cli.py") == "cli"
