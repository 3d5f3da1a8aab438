"""The API reference is generated from the docstrings (``mkdocs build --strict`` fails on
one griffe cannot parse, but not on one that is missing): every public function of the
package, and every public method of a public class, has a Google-style docstring that
documents its arguments, and every public class a docstring. Read from the source with
``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "metareward"


def _public_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py")
                  if not any(part.startswith("_") and part != "__init__.py"
                             for part in p.relative_to(SRC).parts))


def _exported(tree: ast.Module) -> set[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return None


def _undocumented(path: Path, root: Path = SRC.parent) -> list[str]:
    tree = ast.parse(path.read_text())
    exported = _exported(tree)
    problems = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.ClassDef) or node.name.startswith("_"):
            continue
        if exported is not None and node.name not in exported:
            continue
        problems += _check(node, f"{path.relative_to(root)}:{node.lineno} {node.name}")
        if isinstance(node, ast.ClassDef):  # its public methods (properties need no Args)
            for method in node.body:
                if isinstance(method, ast.FunctionDef) and not method.name.startswith("_"):
                    problems += _check(method, f"{path.relative_to(root)}:{method.lineno} "
                                               f"{node.name}.{method.name}")
    return problems


def _check(node: ast.FunctionDef | ast.ClassDef, where: str) -> list[str]:
    doc = ast.get_docstring(node) or ""
    if not doc:
        return [f"{where}: no docstring"]
    if isinstance(node, ast.FunctionDef):
        args = [a.arg for a in node.args.args + node.args.kwonlyargs
                if a.arg not in ("self", "cls")]
        if args and "Args:" not in doc:
            return [f"{where}: no Args: section for {args}"]
    return []


def test_public_modules_are_found():
    names = {p.relative_to(SRC).as_posix() for p in _public_modules()}
    assert {"algos/ppo.py", "envs/registry.py", "meta/hypergrad.py", "cli.py"} <= names


@pytest.mark.parametrize("path", _public_modules(), ids=lambda p: p.relative_to(SRC).as_posix())
def test_public_functions_have_google_docstrings(path):
    assert _undocumented(path) == []


def test_the_check_fails_without_docstrings(tmp_path):
    bad = tmp_path / "mod.py"
    bad.write_text('def f(x):\n    """Does f."""\n\n\ndef g():\n    pass\n\n\n'
                   'class C:\n    def m(self, y):\n        return y\n')
    assert [p.split(" ", 1)[1] for p in _undocumented(bad, tmp_path)] == [
        "f: no Args: section for ['x']", "g: no docstring", "C: no docstring",
        "C.m: no docstring"]

