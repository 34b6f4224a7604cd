"""Private Feast names: all in features/feast_compat.py, and all still where Feast had them.

When a Feast upgrade fails here, fix features/feast_compat.py (and its PRIVATE_NAMES); nothing
else reaches into Feast's private names.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from features.feast_compat import PRIVATE_NAMES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "feature_repo", "features", "jobs", "models", "scoring", "serving", "towerflow", "dags")
COMPAT = ROOT / "features" / "feast_compat.py"


@pytest.mark.parametrize(("module", "qualname", "params"), PRIVATE_NAMES, ids=[q for _, q, _ in PRIVATE_NAMES])
def test_private_name_is_where_feast_had_it(module: str, qualname: str, params: tuple[str, ...]) -> None:
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        assert obj is not None, f"Feast no longer has {module}.{qualname}: update features/feast_compat.py"
    assert tuple(inspect.signature(obj).parameters) == params, f"{module}.{qualname} changed its parameters"


def _private_feast_uses(path: Path) -> list[str]:
    """`from feast... import _x` and `._name` attribute uses of PRIVATE_NAMES' names in one file."""
    names = {q.rsplit(".", 1)[-1] for _, q, _ in PRIVATE_NAMES}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("feast"):
            found += [f"{path}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr in names:
            found.append(f"{path}:{node.lineno} {node.attr}")
    return found


def test_no_module_but_the_compat_module_uses_private_feast_names() -> None:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if p != COMPAT]
    assert files
    assert [use for p in files for use in _private_feast_uses(p)] == []
    assert _private_feast_uses(COMPAT)  # the check does see them
