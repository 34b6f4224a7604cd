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


def _declared(role: type) -> set[str]:
    """The fields `role` declares itself (not those it inherits)."""
    inherited = set().union(*(base.model_fields for base in role.__bases__ if hasattr(base, "model_fields")))
    return set(role.model_fields) - inherited


def test_every_field_belongs_to_exactly_one_role() -> None:
    from towerflow.settings import ROLES

    owners: dict[str, list[str]] = {}
    for role in ROLES:
        for name in _declared(role):
            owners.setdefault(name, []).append(role.__name__)
    assert set(owners) == set(Settings.model_fields), set(Settings.model_fields) ^ set(owners)
    assert not {name: roles for name, roles in owners.items() if len(roles) != 1}
    assert not _declared(Settings), "Settings declares no field of its own; put it in a role class"
    assert all(issubclass(Settings, role) for role in ROLES)


def test_each_role_documents_its_own_fields() -> None:
    from towerflow.settings import ROLES

    for role in ROLES:
        doc = role.__doc__ or ""
        undocumented = sorted(name for name in _declared(role) if name not in doc)
        assert not undocumented, f"{role.__name__}'s docstring does not name {undocumented}"


def test_plain_variable_names_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOWERFLOW_CI", "TOWERFLOW_KAFKA_BOOTSTRAP_SERVERS", "TOWERFLOW_AIRFLOW_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://a@db/airflow")
    monkeypatch.setenv("TOWERFLOW_STREAM_NAME", "clicks")
    settings = Settings()
    assert settings.ci is True
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.airflow_db_url == "postgresql+psycopg2://a@db/airflow"
    assert settings.stream_name == "clicks"


def test_gate_variants_are_comma_separated_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    assert Settings().gate_variants == ("all", "new")
    monkeypatch.setenv("TOWERFLOW_GATE_VARIANTS", "all,unseen")
    assert Settings().gate_variants == ("all", "unseen")
    monkeypatch.setenv("TOWERFLOW_GATE_VARIANTS", "all,old")
    with pytest.raises(ValidationError, match="gate_variants"):
        Settings()


def test_gate_targets_are_metric_lifts_in_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from towerflow.tasks import _policy

    assert Settings().gate_targets == {"recall@10": 1.1}
    monkeypatch.setenv("TOWERFLOW_GATE_TARGETS", '{"ndcg@10": 1.05, "recall@50": 1.0}')
    assert _policy(Settings()).targets == (("ndcg@10", 1.05), ("recall@50", 1.0))
    monkeypatch.setenv("TOWERFLOW_GATE_TARGETS", "{}")
    assert _policy(Settings()).targets == ()
    for wrong in ('{"recall@7": 1.1}', '{"recall@10": 0}'):
        monkeypatch.setenv("TOWERFLOW_GATE_TARGETS", wrong)
        with pytest.raises(ValidationError, match="gate_targets"):
            Settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOWERFLOW_FEATURE_ENV", "cloud"),
        ("TOWERFLOW_STREAM_BACKEND", "pulsar"),
        ("TOWERFLOW_DELTA_ENGINE", "hive"),
        ("TOWERFLOW_GATE_METRIC", "recall@1000"),
        ("TOWERFLOW_JWT_ALGORITHMS", '["HS265"]'),
    ],
)
def test_a_choice_outside_its_literal_is_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("TOWERFLOW_").lower()):
        Settings()
