"""`towerflow experiments create|list|show|stop|import` against the SQLite store under a fresh
TOWERFLOW_HOME: what the commands print, and bad input ending in one `error:` line naming the
field, exit code 1, no stack trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from towerflow.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["experiments", *args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_create_show_list_and_stop(home: Path) -> None:
    code, out = run("create", "--name", "ranker canary", "--arm", "control:90", "--arm", "treatment:10%:ranking=canary")
    assert code == 0, out
    assert "experiment 1: ranker canary" in out and "canary" in out
    assert (home / "experiments.sqlite3").exists()

    code, out = run("show", "1", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["status"] == "running" and shown["surface"] == "home"
    assert [(a["name"], a["share"], a["models"]["ranking"]) for a in shown["arms"]] == [
        ("control", 90, "stable"),
        ("treatment", 10, "canary"),
    ]

    code, out = run("list", "--status", "running", "--json")
    assert code == 0 and [e["id"] for e in json.loads(out)] == ["1"]

    code, out = run("stop", "1", "--decision", "rollback", "--reason", "CTR fell 3%")
    assert code == 0 and "rollback" in out and "CTR fell 3%" in out
    code, out = run("list", "--json")
    assert json.loads(out)[0]["status"] == "stopped" and json.loads(out)[0]["ended_at"]
    code, out = run("list")
    assert code == 0 and "ranker" in out and "stopped" in out


@pytest.mark.parametrize(
    ("arms", "needle"),
    [
        (["control:90", "treatment:20"], "arms: the arms' shares must sum to 100"),
        (["control:90", "treatment:10:rankng=canary"], "arms.treatment.models: unknown model(s) ['rankng']"),
        (["control:90", "treatment"], "--arm: 'treatment' is not NAME:SHARE"),
        (["control:90", "treatment:ten"], "arms.treatment.share: Input should be a valid number"),
        (["control:90", "treatment:10:ranking"], "--arm: 'treatment:10:ranking': 'ranking' is not MODEL=LABEL"),
    ],
)
def test_bad_arms_name_the_field(home: Path, arms: list[str], needle: str) -> None:
    code, out = run("create", "--name", "x", *(f"--arm={a}" for a in arms))
    assert code == 1 and out.startswith("error: ") and needle in " ".join(out.split()), out
    assert run("list", "--json") == (0, "[]\n")


def test_conflicts_and_unknown_ids_are_errors(home: Path) -> None:
    assert run("create", "--name", "a", "--arm", "control:100")[0] == 0
    code, out = run("create", "--name", "b", "--arm", "control:100")
    assert code == 1 and "already running on surface 'home'" in out and "experiments stop 1" in out
    assert run("create", "--name", "b", "--surface", "email", "--arm", "control:100")[0] == 0
    code, out = run("show", "42")
    assert code == 1 and "no experiment has the id '42'" in out
    assert run("stop", "1")[0] == 0
    code, out = run("stop", "1")
    assert code == 1 and "was stopped at" in out


def test_an_old_experiments_json_is_imported(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "experiments.json"
    path.write_text(
        json.dumps({"id": "exp-1", "arms": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]})
    )
    code, out = run("import", str(path), "--json")
    imported = json.loads(out)
    assert code == 0 and imported["salt"] == "exp-1" and [a["share"] for a in imported["arms"]] == [50, 50]
    code, out = run("import", str(tmp_path / "absent.json"))
    assert code == 1 and "cannot read" in out
    path.write_text("{")
    code, out = run("import", str(path))
    assert code == 1 and "file: not JSON" in out


def test_an_unreachable_database_is_one_error_line(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWERFLOW_DATABASE_URL", "postgresql://towerflow:hunter2@127.0.0.1:9/experiments")
    code, out = run("list")
    assert code == 1 and out.startswith("error: the experiments database") and "hunter2" not in out
