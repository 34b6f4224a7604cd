"""One package per process: the gateway imports nothing from jobs/, from the model server's
package or TensorFlow; the model server imports nothing from the gateway; the features runtime
and the experiments package import neither the jobs, the models nor either process; monitoring
imports neither the jobs, TensorFlow nor either process.

Each rule is checked twice: on the import statements of every module in the package (top level
or inside a function, so a lazy import counts too), and by importing every module of the package
in a fresh interpreter and looking at what `sys.modules` then holds.

And the gateway runs with what its image installs (requirements/gateway.lock, Dockerfile.gateway):
a fresh interpreter in which TensorFlow, Spark, Airflow, Great Expectations and every other module
that lock does not install fail to import builds the app with its factory and answers /healthz.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]

#: package -> module prefixes none of its modules may import.
FORBIDDEN = {
    "serving.gateway": ("jobs", "serving.model_server", "tensorflow"),
    "serving.model_server": ("serving.gateway",),
    "features": ("jobs", "serving", "models"),
    "experiments": ("jobs", "serving", "models"),  # shared by the gateway, the CLI and the DAGs
    "monitoring": ("jobs", "serving", "tensorflow"),  # the report (pipeline, CLI) and the gateway's exporter
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


#: Never on the gateway's path, whatever the gateway lock says.
HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_recommenders", "tensorflow_serving", "pyspark", "airflow")
HEAVY += ("great_expectations", "delta")
#: Installed in the image besides the lock (pip's own), or the project itself.
NOT_FROM_THE_LOCK = {"pip", "setuptools", "wheel", "towerflow"}
#: Builds the gateway as `uvicorn serving.gateway.main:serve_app --factory` does, with every module
#: in argv[1] failing to import, and answers /healthz. The test client (httpx) is imported first:
#: it is the harness, not the gateway.
GATEWAY_ALONE = """
import importlib.abc, json, sys
from starlette.testclient import TestClient
harness = set(sys.modules)
blocked = set(json.loads(sys.argv[1]))

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ImportError(f"{name} is not installed on a gateway host (requirements/gateway.lock)")
        return None

sys.meta_path.insert(0, Absent())
from serving.gateway.main import serve_app
with TestClient(serve_app()) as client:
    response = client.get("/healthz")
loaded = sorted(m for m in set(sys.modules) - harness if m.partition(".")[0] in blocked)
print(json.dumps({"status": response.status_code, "body": response.json(), "loaded": loaded}))
"""


def not_on_a_gateway_host() -> set[str]:
    """Top-level modules the gateway may not import: HEAVY, and every module installed here whose
    distribution requirements/gateway.lock does not pin."""
    lock = (REPO / "requirements" / "gateway.lock").read_text()
    pinned = {canonicalize_name(m) for m in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", lock, re.M)}
    allowed = pinned | NOT_FROM_THE_LOCK
    return set(HEAVY) | {
        module
        for module, dists in packages_distributions().items()
        if module.isidentifier() and not any(canonicalize_name(d) in allowed for d in dists)
    }


def test_the_gateway_answers_with_only_what_its_lock_installs(tmp_path: Path) -> None:
    blocked = not_on_a_gateway_host()
    assert {"tensorflow", "pyspark", "airflow", "great_expectations"} <= blocked
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOWERFLOW_")}
    env.pop("REDIS_URL", None)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env |= {"TOWERFLOW_HOME": str(tmp_path), "TOWERFLOW_MODEL_SERVER_TARGET": "127.0.0.1:9"}  # nothing there
    result = subprocess.run(
        [sys.executable, "-c", GATEWAY_ALONE, json.dumps(sorted(blocked))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert (answer["status"], answer["body"]["status"]) == (200, "ok"), answer
    assert not answer["loaded"], f"the gateway loaded {answer['loaded'][:10]}"
