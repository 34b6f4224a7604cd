"""One package per process: the gateway imports nothing from jobs/, from the model server's
package or TensorFlow; the model server imports nothing from the gateway; the features runtime
imports neither the jobs nor either process.

Each rule is checked twice: on the import statements of every module in the package (top level
or inside a function, so a lazy import counts too), and by importing every module of the package
in a fresh interpreter and looking at what `sys.modules` then holds.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: package -> module prefixes none of its modules may import.
FORBIDDEN = {
    "serving.gateway": ("jobs", "serving.model_server", "tensorflow"),
    "serving.model_server": ("serving.gateway",),
    "features": ("jobs", "serving", "models"),
}
#: Imported at run time: what the package's modules pull in, the standard library and
#: third-party packages included.
LOADED = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
if sys.argv[1] == "serving.gateway":
    package.main.create_app()
print(json.dumps(sorted(sys.modules)))
"""


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _imports(path: Path) -> set[str]:
    """Every module an `import` / `from ... import` statement in `path` names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_of_a_package_imports_across_its_boundary(package: str) -> None:
    folder = REPO / package.replace(".", "/")
    files = sorted(folder.rglob("*.py"))
    assert files, f"no modules under {folder}"
    crossing = {
        f"{path.relative_to(REPO)}: {module}"
        for path in files
        for module in _imports(path)
        if _matches(module, FORBIDDEN[package])
    }
    assert not crossing, f"{package} must not import {FORBIDDEN[package]}: {sorted(crossing)}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_a_package_loads_nothing_across_its_boundary(package: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOADED, package], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    crossing = [m for m in loaded if _matches(m, FORBIDDEN[package])]
    assert not crossing, f"importing {package} loaded {crossing[:10]}"
