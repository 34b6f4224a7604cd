"""The locks per role (`make locks`): the gateway's installs no TensorFlow, Spark, Airflow or Great
Expectations; the production lock no development tools; each role lock pins what the developer
lock (requirements.lock, what CI tests) pins."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
ROLE_LOCKS = ("gateway", "production")
#: What the gateway host must not install (prefixes of distribution names).
NOT_ON_THE_GATEWAY = (
    "tensorflow",
    "tf-keras",
    "keras",
    "pyspark",
    "delta-spark",
    "apache-airflow",
    "great-expectations",
)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(lock: Path) -> dict[str, str]:
    """`{canonical name: version}` of a uv-compiled lock."""
    found = {}
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            found[canonicalize_name(match[1])] = match[2]
    assert found, f"no pins in {lock}"
    return found


def extra(name: str) -> set[str]:
    """Canonical names of the distributions setup.cfg lists under extra `name`."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.extras_require"][name].strip().splitlines()
    return {canonicalize_name(Requirement(line).name) for line in lines if line.strip()}


def test_the_gateway_lock_holds_no_tensorflow_spark_airflow_or_gx() -> None:
    heavy = sorted(name for name in pins(REPO / "requirements/gateway.lock") if name.startswith(NOT_ON_THE_GATEWAY))
    assert not heavy, f"requirements/gateway.lock installs {heavy}; check what the gateway extra pulls in"


def test_the_production_lock_holds_no_development_tools() -> None:
    tools = extra("dev") | {"pytest", "ruff", "mypy", "moto"}
    found = sorted(tools & pins(REPO / "requirements/production.lock").keys())
    assert not found, f"requirements/production.lock installs development tools {found}"


def test_the_production_lock_holds_every_role() -> None:
    production = pins(REPO / "requirements/production.lock")
    missing = {role: sorted(extra(role) - production.keys()) for role in ("gateway", "pipeline", "models", "stream")}
    assert not any(missing.values()), f"run `make locks`: {missing}"


@pytest.mark.parametrize("role", ROLE_LOCKS)
def test_a_role_lock_pins_what_the_developer_lock_pins(role: str) -> None:
    developer = pins(REPO / "requirements.lock")
    differ = {
        name: (version, developer.get(name))
        for name, version in pins(REPO / f"requirements/{role}.lock").items()
        if developer.get(name) != version
    }
    assert not differ, f"requirements/{role}.lock differs from requirements.lock (run `make locks`): {differ}"
