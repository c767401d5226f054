"""The house rules, checked on the source: mpl_core's layers import downwards only, mpl_core never
imports Streamlit, and the app (app.py, ui.py, app_pages/) imports no torch and only mpl_core's
public API."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Rank of each part of mpl_core: a module may import its own rank or lower, never higher.
LAYERS = {"errors": 0, "config": 0, "presets": 0, "data": 1, "engine": 2, "workspace": 3, "service": 4}
TOP = 5  # mpl_core/__init__.py and __main__.py sit above everything
APP_FILES = ["app.py", "server.py", "ui.py", *sorted(str(p.relative_to(ROOT)) for d in ("app_pages", "review_grid")
                                     for p in (ROOT / d).glob("*.py"))]


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the source, function-level ones included;
    relative imports are resolved against `module` (dotted name of the file's package module)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # the file's package, then one folder up per extra dot
                package = module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] if not node.module else [base]
            out += [(node.lineno, n) for n in names]
    return out


def rank(module: str) -> int | None:
    """The layer of an mpl_core module; None for modules outside mpl_core."""
    parts = module.split(".")
    if parts[0] != "mpl_core":
        return None
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return TOP
    return LAYERS.get(parts[1], TOP)


def layer_violations(source: str, module: str) -> list[str]:
    own = rank(module)
    problems = []
    for line, name in imported_modules(source, module):
        if name.split(".")[0] == "streamlit":
            problems.append(f"{module}:{line} imports streamlit")
        target = rank(name)
        if name.split(".")[:2] == ["mpl_core"] or name.startswith("mpl_core.__init__"):
            if own is not None and own < TOP:  # the lazy API reaches every layer, the service included
                problems.append(f"{module}:{line} imports mpl_core's public API; import the module itself")
        elif target is not None and own is not None and target > own:
            problems.append(f"{module}:{line} imports {name}, a higher layer")
    return problems


def app_violations(source: str, name: str) -> list[str]:
    problems = []
    for line, module in imported_modules(source, name):
        if module.split(".")[0] == "torch":
            problems.append(f"{name}:{line} imports torch")
        if module.startswith("mpl_core."):
            problems.append(f"{name}:{line} imports {module}; import from mpl_core's public API instead")
    return problems


def _library_modules():
    for path in sorted((ROOT / "mpl_core").rglob("*.py")):
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        yield dotted, path.read_text()


def test_mpl_core_imports_point_down_and_never_at_streamlit():
    problems = [p for module, source in _library_modules() for p in layer_violations(source, module)]
    assert problems == []


def test_app_imports_no_torch_and_only_the_public_api():
    problems = [p for f in APP_FILES for p in app_violations((ROOT / f).read_text(), f)]
    assert problems == []


def test_every_public_name_resolves():
    import mpl_core
    for name in mpl_core.__all__:
        assert getattr(mpl_core, name) is not None, name


@pytest.mark.parametrize("module, source, expected", [
    ("mpl_core.engine.train", "from mpl_core.workspace.store import Store\n", "a higher layer"),
    ("mpl_core.data.splits", "def f():\n    from mpl_core.engine import models\n", "a higher layer"),
    ("mpl_core.workspace.review", "from ..service.work import recover\n", "a higher layer"),
    ("mpl_core.engine.train", "from mpl_core import Studio\n", "public API"),
    ("mpl_core.engine.train", "import streamlit as st\n", "imports streamlit"),
])
def test_a_wrong_import_is_caught(module, source, expected):
    problems = layer_violations(source, module)
    assert len(problems) == 1 and expected in problems[0]


def test_the_checker_allows_imports_that_point_down():
    assert layer_violations("from mpl_core.data.dataset import Dataset\nfrom .algorithms import Batch\n",
                            "mpl_core.engine.train") == []


@pytest.mark.parametrize("source, expected", [
    ("import torch\n", "imports torch"),
    ("from torch import nn\n", "imports torch"),
    ("from mpl_core.engine.train import train\n", "public API"),
])
def test_a_page_that_imports_torch_or_internals_is_caught(source, expected):
    problems = app_violations(source, "app_pages/x.py")
    assert len(problems) == 1 and expected in problems[0]
