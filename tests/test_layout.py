"""The package's layout rules that a linter does not check: no module imports another's
private names (a leading underscore), in the package, its tests or its benchmarks."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def private_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line name`` (relative to ``root``) of each private promptrec name ``path``
    imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("promptrec"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(root)}:{node.lineno} {alias.name}")
    return found


def test_no_private_name_is_imported_across_modules():
    files = [p for d in ("src", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 100  # the walk found the package
    assert [hit for f in files for hit in private_imports(f)] == []


def test_the_check_sees_a_private_import(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("import os\nfrom promptrec.ranking import _rescored, rank\n")
    assert private_imports(module, tmp_path) == ["probe.py:2 _rescored"]
