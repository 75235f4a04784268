"""The layout's one rule: a package uses another package's public names, never its private
modules (`larrylab.<package>._<module>`)."""

from __future__ import annotations

import ast
from pathlib import Path

import larrylab

ROOT = Path(larrylab.__file__).resolve().parent


def _package(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return parts[0] if len(parts) > 1 else ""


def _private_imports(path: Path) -> list[str]:
    own = _package(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        for module in modules:
            parts = module.split(".")
            if parts[0] != "larrylab" or len(parts) < 3 or parts[1] == own:
                continue
            if any(p.startswith("_") and not p.startswith("__") for p in parts[2:]):
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} imports {module}")
    return found


def test_no_module_imports_another_packages_private_modules() -> None:
    offenders = [
        line
        for path in sorted(ROOT.rglob("*.py"))
        if "migrations" not in path.parts
        for line in _private_imports(path)
    ]
    assert offenders == []


def test_every_package_says_what_it_is_for() -> None:
    for init in sorted(ROOT.glob("*/__init__.py")):
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), init


def _larrylab_imports(path: Path) -> set[str]:
    """The larrylab packages (`larrylab.<package>`) a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "larrylab" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_the_rollups_depend_on_the_database_only() -> None:
    """The request log and the experiments add to and read the rollups, never the reverse."""
    for path in sorted((ROOT / "rollups").rglob("*.py")):
        assert _larrylab_imports(path) <= {"db", "rollups"}, path
