"""The Python examples in the README and docs/ import names that exist: an import moved in the
package and left behind in a page fails here, not in a user's hands."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def kd_imports(page: Path) -> list[str]:
    """Every `import kd...` / `from kd... import ...` statement of the page's python blocks."""
    statements = []
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
        for node in ast.walk(ast.parse(block)):
            modules = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                       [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            if any(m == "kd" or m.startswith("kd.") for m in modules):
                statements.append(ast.unparse(node))
    return statements


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_kd_imports_of_every_python_example_resolve(page):
    for statement in kd_imports(page):
        if "lightning" in statement:
            pytest.importorskip("lightning")
        exec(statement, {})  # an ImportError names the moved name


def test_the_pages_have_examples_to_check():
    assert len(kd_imports(ROOT / "docs" / "integrations.md")) >= 5
