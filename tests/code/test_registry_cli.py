"""`towerflow models list|promote|rollback` over a registry folder (version folders are only
checked for their saved_model.pb, so empty files stand in for SavedModels here)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.registry import entries, labels, publish
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


def test_promoting_an_unloaded_version_waits_for_the_model_server(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version the load policy dropped is added back, and `stable` moves to it only once the
    configured server reports it AVAILABLE (TF Serving refuses a label on a version it has not
    loaded)."""
    models = home / "models"
    for n in range(4):
        publish(models, _staged(tmp_path, str(n)), {"run": n})
    assert 2 not in entries(models)["retrieval"].policy.versions  # stable 1, canary 4, newest 3 kept
    monkeypatch.setenv("TOWERFLOW_MODEL_SERVER_TARGET", "127.0.0.1:1")  # nothing answers there
    waited = []

    class Server:
        def __init__(self, target: str) -> None:
            pass

        def wait_until_available(self, model: str, version: int | None = None, **_) -> int:
            entry = entries(models)[model]
            assert version in entry.policy.versions and entry.labels["stable"] == 1
            waited.append((model, version))
            return version

        def close(self) -> None:
            pass

    # In place of serving.tfs_client: no model server runs here.
    monkeypatch.setitem(sys.modules, "serving.tfs_client", types.SimpleNamespace(ModelClient=Server))
    promoted = runner.invoke(app, ["models", "promote", "retrieval", "2"])
    assert promoted.exit_code == 0, promoted.output
    assert waited == [("retrieval", 2)]
    assert labels(models, "retrieval") == {"stable": 2, "canary": 4, "previous": 1}
