"""The dependency rule of DESIGN: `shared` imports neither side; `client` and `server`
never import each other. Lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"shared": ("fedehr.client", "fedehr.server"),
             "client": ("fedehr.server",), "server": ("fedehr.client",)}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_across_the_rule(package):
    crossings = [f"{path.relative_to(REPO)} imports {name}"
                 for path in sorted((REPO / package).rglob("*.py"))
                 for name in sorted(imported_modules(path))
                 if name.startswith(FORBIDDEN[package])]
    assert not crossings, "\n".join(crossings)
