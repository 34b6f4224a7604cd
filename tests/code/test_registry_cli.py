"""`towerflow models list|promote|rollback` over a registry folder (version folders are only
checked for their saved_model.pb, so empty files stand in for SavedModels here)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from models.registry import labels, publish
from towerflow.cli import app

runner = CliRunner()


def _staged(root: Path, tag: str) -> dict[str, Path]:
    out = {}
    for model in ("retrieval", "ranking"):
        folder = root / tag / model
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"")
        out[model] = folder
    return out


def test_publish_promote_and_roll_back(home: Path, tmp_path: Path) -> None:
    models = home / "models"
    assert publish(models, _staged(tmp_path, "a"), {"run_date": "2025-01-01"}) == 1
    assert publish(models, _staged(tmp_path, "b"), {"run_date": "2025-01-02"}) == 2
    assert labels(models, "retrieval") == {"stable": 1, "canary": 2}
    meta = json.loads((models / "retrieval" / "2" / "assets.extra" / "towerflow.json").read_text())
    assert meta["version"] == 2 and meta["run_date"] == "2025-01-02"

    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "canary" in listed.output and "stable" in listed.output

    promoted = runner.invoke(app, ["models", "promote", "retrieval", "2"])
    assert promoted.exit_code == 0, promoted.output
    assert labels(models, "retrieval") == {"stable": 2, "canary": 2, "previous": 1}

    back = runner.invoke(app, ["models", "rollback", "retrieval"])
    assert back.exit_code == 0, back.output
    assert labels(models, "retrieval")["stable"] == 1


def test_promoting_an_unpublished_version_is_refused(home: Path, tmp_path: Path) -> None:
    publish(home / "models", _staged(tmp_path, "a"), {})
    result = runner.invoke(app, ["models", "promote", "ranking", "7"])
    assert result.exit_code == 1
    assert "not published" in result.output and "Traceback" not in result.output
    unknown = runner.invoke(app, ["models", "promote", "nope", "1"])
    assert unknown.exit_code == 1 and "unknown model" in unknown.output
