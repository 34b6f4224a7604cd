from pathlib import Path

import pytest

from towerflow.settings import Settings


def test_home_and_lake_layout_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path))
    settings = Settings()
    assert settings.home_dir == tmp_path.resolve()
    assert settings.table_uri("bronze", "events") == f"{tmp_path.resolve()}/lake/bronze/events"
    assert settings.models_dir == tmp_path.resolve() / "models"


def test_redis_url_accepts_the_plain_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOWERFLOW_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/3")
    assert Settings().redis_url == "redis://example:6379/3"


def test_object_store_lake_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWERFLOW_LAKE_URI", "s3://bucket/lake/")
    assert Settings().table_uri("gold", "item_features") == "s3://bucket/lake/gold/item_features"


def test_unknown_layer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown lake layer"):
        Settings().table_uri("platinum", "events")


def test_a_towerflow_variable_naming_no_setting_is_reported_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from towerflow.settings import unknown_variables

    names = ["TOWERFLOW_HOME", "REDIS_URL", "TOWERFLOW_REDIS_URL", "TOWERFLOW_TOKEN", "TOWERFLOW_BENCH_RATE"]
    assert unknown_variables([*names, "TOWERFLOW_RANKING_TIMEOUT_MS", "PATH"]) == set()
    assert unknown_variables(["TOWERFLOW_RANKNIG_TIMEOUT_MS", "TOWERFLOW_HOME"]) == {"TOWERFLOW_RANKNIG_TIMEOUT_MS"}

    monkeypatch.setenv("TOWERFLOW_GATEWAY_PROT", "9000")
    with caplog.at_level("WARNING", logger="towerflow.settings"):
        Settings()
        Settings()
    warned = [r.getMessage() for r in caplog.records if "TOWERFLOW_GATEWAY_PROT" in r.getMessage()]
    assert len(warned) == 1 and "names no setting" in warned[0]


def test_log_format_is_text_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("TOWERFLOW_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    monkeypatch.setenv("TOWERFLOW_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()
