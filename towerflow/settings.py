"""The settings, grouped by role. Every other module takes typed arguments, not the environment.

Values come from `TOWERFLOW_*` environment variables (or a `.env` file in the working folder).
`REDIS_URL` is accepted as well as `TOWERFLOW_REDIS_URL`, because that is what docker-compose
and most hosting platforms set (likewise `KAFKA_BOOTSTRAP_SERVERS`, `CI` and Airflow's
`AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`).

Each role's fields are one class (HomeSettings, the base of all, then EtlSettings, AirflowSettings,
FeatureSettings, TrainingSettings, ModelServerSettings, ScoringSettings, StreamSettings,
ExperimentSettings, MonitoringSettings and GatewaySettings); `Settings` inherits them all, so a variable's name is
`TOWERFLOW_<FIELD>` whichever class declares the field.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from jobs.gold import HoldoutSize

LAYERS = ("landing", "bronze", "silver", "gold")
PREFIX = "TOWERFLOW_"
# Read by other tools, not settings: the CLI's client token, benchmarks and test services.
_NOT_SETTINGS = ("TOWERFLOW_TOKEN", "TOWERFLOW_BENCH_", "TOWERFLOW_TEST_")
_warned: set[str] = set()

log = logging.getLogger(__name__)


#: `TOWERFLOW_DELTA_ENGINE`: who commits to Delta (see EtlSettings).
DeltaEngine = Literal["auto", "delta-rs", "spark"]
#: `TOWERFLOW_FEATURE_ENV`: which feature_store.yaml (see FeatureSettings).
FeatureEnv = Literal["auto", "redis", "embedded"]
#: `TOWERFLOW_LOG_FORMAT`.
LogFormat = Literal["text", "json"]
#: `TOWERFLOW_STREAM_BACKEND` (see StreamSettings).
StreamBackend = Literal["auto", "redis", "kafka", "local"]
#: `TOWERFLOW_GATE_METRIC`: the evaluation metrics with confidence intervals (models.evaluate.INTERVAL_METRICS).
GateMetric = Literal["recall@10", "recall@50", "recall@100", "ndcg@10"]
#: The evaluation variants (models.evaluate): every holdout user, users new since training, unseen items.
GateVariant = Literal["all", "new", "unseen"]
#: `TOWERFLOW_JWT_ALGORITHMS`: the JWS algorithms PyJWT verifies.
JwtAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"
]


def _comma_separated(value: object) -> object:
    """`"all,new"` (the environment's form) as `["all", "new"]`; other values unchanged."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class HomeSettings(BaseSettings):
    """Where things live, and switches every process reads. The base of every role's settings.

    Attributes:
        home: root for everything the project writes (lake, feature registry, models, Airflow).
        lake_uri: lake root when it is not under `home` (e.g. `s3://bucket/lake`).
        storage_options: delta-rs storage options for `lake_uri` (JSON object).
        shared_data: where the shared data sets are (Online Retail for imports and benchmarks).
        redis_url: Redis for the online store, event stream, rate limits and precomputed
            recommendations (also read from REDIS_URL); None = the embedded stores.
        redis_prefix: prefix of towerflow's own Redis keys (rate limits, precomputed recs).
        ci: true under CI (also read from CI); tests that need a service or shared data fail
            instead of skipping.
        log_format: `text`, or `json` (one object a line with the request id; `towerflow.logs`).
    """

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", env_ignore_empty=True, extra="ignore")

    home: Path = Path("var")
    lake_uri: str | None = None
    storage_options: dict[str, str] = Field(default_factory=dict)
    shared_data: Path = Path("../shared/data")
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("TOWERFLOW_REDIS_URL", "REDIS_URL"))
    redis_prefix: str = "towerflow:"
    ci: bool = Field(default=False, validation_alias=AliasChoices("TOWERFLOW_CI", "CI"))
    log_format: LogFormat = "text"

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def lake(self) -> str:
        """Lake root: a local folder (absolute) or an object-store URI."""
        return self.lake_uri or str(self.home_dir / "lake")

    def table_uri(self, layer: str, table: str) -> str:
        """URI of a Delta table, `<lake>/<layer>/<table>`."""
        if layer not in LAYERS:
            raise ValueError(f"unknown lake layer {layer!r}; expected one of {', '.join(LAYERS)}")
        return f"{self.lake.rstrip('/')}/{layer}/{table}"

    @property
    def landing_dir(self) -> Path:
        return self.home_dir / "landing"

    @property
    def quarantine_dir(self) -> Path:
        return self.home_dir / "quarantine"

    @property
    def models_dir(self) -> Path:
        """The model base: TF Serving's folder layout and `models.config`."""
        return self.home_dir / "models"

    @property
    def reports_dir(self) -> Path:
        return self.home_dir / "reports"

    @property
    def data_docs_dir(self) -> Path:
        """Great Expectations Data Docs (HTML) of the pipeline's quality gates."""
        return self.reports_dir / "data_docs"

    @property
    def staging_dir(self) -> Path:
        """Scratch space for Spark output on its way into delta-rs."""
        return self.home_dir / "staging"


class EtlSettings(HomeSettings):
    """The daily ETL: Spark, Delta commits, the landing window and the data-quality gate.

    Attributes:
        spark_master: Spark master URL; `local[*]` on a laptop, a cluster URL elsewhere.
        spark_driver_memory: `spark.driver.memory`.
        spark_conf: extra Spark conf (JSON object in the environment), applied last.
        delta_engine: who commits to Delta: `delta-rs` (Spark writes Parquet, delta-rs commits),
            `spark` (`format("delta")`, needs the delta-spark jars) or `auto` (Spark when it has them).
        ingest_lookback_days: a daily run also picks up landing files of this many missed days.
        dq_max_day_ratio: the data-quality gate's limit on one day's rows against the median day.
    """

    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    spark_conf: dict[str, str] = Field(default_factory=dict)
    delta_engine: DeltaEngine = "auto"
    ingest_lookback_days: int = 3
    dq_max_day_ratio: float = 10.0


class AirflowSettings(HomeSettings):
    """Airflow as `towerflow` runs it (`towerflow airflow standalone`, `pipeline run`, `make demo`).

    Attributes:
        airflow_db_url: Airflow's metadata DB (also read from AIRFLOW__DATABASE__SQL_ALCHEMY_CONN),
            e.g. `postgresql+psycopg2://postgres@127.0.0.1:5432/airflow`; None = SQLite under
            `<home>/airflow`.
        airflow_parallelism: Airflow's parallelism and max active tasks per DAG (standalone needs
            ~5 GB at Airflow's defaults; keep it small).
        airflow_api_host / airflow_api_port: where `towerflow airflow standalone` serves the UI/API.
    """

    airflow_db_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TOWERFLOW_AIRFLOW_DB_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
    )
    airflow_parallelism: int = 2
    airflow_api_host: str = "127.0.0.1"
    airflow_api_port: int = 8080

    @property
    def airflow_home(self) -> Path:
        return self.home_dir / "airflow"


class FeatureSettings(HomeSettings):
    """The Feast feature store (feature_repo/; features.store opens it).

    Attributes:
        feast_project: Feast project name; also the suffix of every online-store key.
        feature_env: which feature_store.yaml: `auto` (Redis when `redis_url` answers, else
            embedded), `redis` or `embedded`.
    """

    feast_project: str = Field(default="towerflow", pattern=r"^[A-Za-z0-9_]+$")
    feature_env: FeatureEnv = "auto"

    @property
    def feature_registry_dir(self) -> Path:
        return self.home_dir / "feast"


def _default_gate_targets() -> dict[GateMetric, float]:
    return {"recall@10": 1.1}


class TrainingSettings(HomeSettings):
    """Training, the holdout and the gate that decides what is published.

    Attributes:
        holdout_days / holdout_min_users / holdout_min_events / holdout_max_days: the holdout is
            the last `holdout_days` days before a run date, longer (up to `holdout_max_days`, and
            at most half the data) until each evaluation variant has `holdout_min_users` users
            and it holds `holdout_min_events` positives (`jobs.gold.choose_cutoff`).
        train_seed: seed of the training runs.
        gate_metric: the primary metric a choice must hold on (models.gate).
        gate_variants: the evaluation variants it must hold in (comma-separated in the
            environment: `all,new`).
        gate_margin: a choice must beat production by more than this (absolute).
        gate_targets: metric -> lift: among trained options that beat the best baseline on
            `gate_metric`, those that also reach `lift` times the best baseline at these metrics
            serve first (JSON in the environment: `{"recall@10": 1.1}`; `{}` for none).
        refit: publish the gate's choice refit through the run date (models.lifecycle.refit_run).
    """

    holdout_days: int = Field(default=7, ge=1)
    holdout_min_users: int = Field(default=100, ge=0)
    holdout_min_events: int = Field(default=500, ge=0)
    holdout_max_days: int = Field(default=28, ge=1)
    train_seed: int = 42
    gate_metric: GateMetric = "recall@100"
    gate_variants: Annotated[tuple[GateVariant, ...], NoDecode, BeforeValidator(_comma_separated)] = Field(
        default=("all", "new"), min_length=1
    )
    gate_margin: float = 0.0
    gate_targets: dict[GateMetric, Annotated[float, Field(gt=0)]] = Field(default_factory=_default_gate_targets)
    refit: bool = True

    def holdout_size(self, min_days: int | None = None) -> HoldoutSize:
        """The holdout's sizing rules; `min_days` instead of `holdout_days` when given."""
        from jobs.gold import HoldoutSize

        return HoldoutSize(
            min_days=min_days or self.holdout_days,
            min_users=self.holdout_min_users,
            min_events=self.holdout_min_events,
            max_days=self.holdout_max_days,
        )


class ModelServerSettings(HomeSettings):
    """The model server: the built-in one (`towerflow model-server`) and how clients reach it.

    Attributes:
        model_server_port: gRPC port of the model server (TF Serving's default, 8500).
        model_server_host: interface the built-in model server listens on; loopback, as it has no
            authentication and takes configs pushed to it (`0.0.0.0` for all, e.g. in a container).
        model_server_max_request_bytes: the largest request the built-in model server accepts
            (RESOURCE_EXHAUSTED beyond, before decoding); the model clients' send limit is the same.
        model_server_poll_seconds: how often the built-in model server re-reads `models.config`
            and rescans the version folders.
        model_server_workers: request threads of the built-in model server.
        model_server_intra_op_threads / model_server_inter_op_threads: TensorFlow's thread pools in
            the built-in model server (TF Serving's `--tensorflow_intra_op_parallelism` /
            `--tensorflow_inter_op_parallelism`); 0 = TensorFlow's default (one per core).
        model_server_target: `host:port` the gateway and the publish task call (default
            127.0.0.1:<model_server_port>), e.g. TF Serving's.
    """

    model_server_port: int = 8500
    model_server_host: str = "127.0.0.1"
    model_server_max_request_bytes: int = Field(default=64 * 1024 * 1024, gt=0, le=2**31 - 1)  # gRPC takes an int32
    model_server_poll_seconds: float = 2.0
    model_server_workers: int = 4
    model_server_intra_op_threads: int = Field(default=0, ge=0)
    model_server_inter_op_threads: int = Field(default=0, ge=0)
    model_server_target: str | None = None

    @property
    def model_target(self) -> str:
        """`host:port` of the model server the gateway calls."""
        return self.model_server_target or f"127.0.0.1:{self.model_server_port}"


class ScoringSettings(HomeSettings):
    """Business rules and fallbacks, applied alike by the gateway, batch precompute and offline
    evaluation (scoring/), so what is served is what was evaluated.

    Attributes:
        category_cap: at most this share of a response from one category (soft: filled up
            from the overflow when too few categories remain).
        freshness_boost / freshness_half_life_days: score += boost * 2^(-age_days / half-life).
        popular_size: popular items held for the fallback path.
        precomputed_ttl_s: how long precomputed recommendations live in Redis.
    """

    category_cap: float = Field(default=0.4, gt=0, le=1)
    freshness_boost: float = 0.05
    freshness_half_life_days: float = 30.0
    popular_size: int = 500
    precomputed_ttl_s: int = 3 * 86_400


class StreamSettings(HomeSettings):
    """The event stream (streams/): what the gateway appends to and the stream worker consumes.

    Attributes:
        stream_backend: `auto` (Kafka when `kafka_bootstrap_servers` is set, else Redis Streams
            when `redis_url` is set, else the local durable queue), `redis`, `kafka` or `local`.
        kafka_bootstrap_servers: Kafka brokers (`host:port,...`; also KAFKA_BOOTSTRAP_SERVERS).
        stream_name: the events stream (Redis key suffix / Kafka topic / local queue name).
        stream_reclaim_after_s: a record read but not acked this long is handed to another consumer.
    """

    stream_backend: StreamBackend = "auto"
    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias=AliasChoices("TOWERFLOW_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS")
    )
    stream_name: str = Field(default="events", pattern=r"^[A-Za-z0-9._-]+$")
    stream_reclaim_after_s: float = Field(default=30.0, gt=0)

    @property
    def streams_dir(self) -> Path:
        """The local durable queue's files (the embedded event stream)."""
        return self.home_dir / "streams"


class ExperimentSettings(HomeSettings):
    """The experiments database (experiments/): `towerflow experiments` writes it, the gateway
    reads the running experiments from it.

    Attributes:
        database_url: SQLAlchemy URL of the experiments database, e.g.
            `postgresql://towerflow@db:5432/towerflow` (psycopg2); None = SQLite at
            `<home>/experiments.sqlite3`.
        experiments_refresh_s: how often the gateway re-reads the running experiments.
        canary_share: percent of `home`'s users the canary arm gets when publishing a pair as
            `canary` starts an experiment, stable vs canary (experiments.lifecycle); 0 = off.
        experiment_alpha / experiment_min_users_per_arm / experiment_max_users_per_arm: the hourly
            decision's significance (over every look), the users each arm needs before a variant
            can win or lose, and the users per arm after which no winner means rollback (None:
            run until one shows); `experiments.analysis.DecisionPolicy`.
    """

    database_url: str | None = None
    experiments_refresh_s: float = Field(default=5.0, gt=0)
    canary_share: float = Field(default=10.0, ge=0, lt=100)
    experiment_alpha: float = Field(default=0.05, gt=0, lt=1)
    experiment_min_users_per_arm: int = Field(default=1000, ge=2)
    experiment_max_users_per_arm: int | None = Field(default=None, ge=2)

    @property
    def experiments_db_url(self) -> str:
        """`database_url`, or the SQLite file under `home`."""
        return self.database_url or f"sqlite:///{self.home_dir / 'experiments.sqlite3'}"


class MonitoringSettings(HomeSettings):
    """Monitoring (monitoring/, docs/monitoring.md): the daily report's drift thresholds and
    reference, and when the gateway counts a user's features as stale.

    Attributes:
        drift_warn_psi / drift_alert_psi: a population stability index from which a feature's
            (or the scores') drift is a warning / an alert.
        drift_reference_days: days in a reference window: the last ones the serving model was
            trained on (else the days before the day reported); for scores, the same version's
            days before.
        stale_user_features_s: a user feature view older than this when the gateway reads it
            counts as a stale read (36 h: a daily run was missed).
    """

    drift_warn_psi: float = Field(default=0.1, gt=0)
    drift_alert_psi: float = Field(default=0.25, gt=0)
    drift_reference_days: int = Field(default=7, ge=1)
    stale_user_features_s: float = Field(default=36 * 3600.0, gt=0)

    @property
    def monitoring_reports_dir(self) -> Path:
        """The daily monitoring reports (`<day>.html` and `<day>.json`)."""
        return self.reports_dir / "monitoring"


class GatewaySettings(
    FeatureSettings, ModelServerSettings, ScoringSettings, StreamSettings, ExperimentSettings, MonitoringSettings
):
    """The recommendation gateway (serving/gateway/): its own settings, below, and the roles it
    is a client of (the feature store, the model server, the scoring rules, the event stream,
    the experiments database, monitoring's stale threshold and reports).

    Attributes:
        gateway_host / gateway_port: where `towerflow serve` binds the HTTP gateway.
        jwt_key: HS* secret or PEM public key that verifies bearer tokens; default: the
            development secret under `<home>/secrets/` (`towerflow token` creates it).
        jwt_jwks_url: verify against this JWKS instead (keys picked by `kid`).
        jwt_algorithms: accepted JWT algorithms (JSON list in the environment).
        jwt_issuer / jwt_audience: required `iss` / `aud` claims.
        rate_limit_user / rate_limit_token: requests per `rate_limit_window_s` per user id and
            per token; 0 turns that limit off.
        retrieval_timeout_ms / ranking_timeout_ms / features_timeout_ms / redis_timeout_ms:
            per-stage time budgets; past one the request degrades instead of waiting.
        breaker_cooldown_s: after a dependency fails, skip it for this long, then probe again.
        impressions_batch / impressions_flush_s: the impression log appends to the event stream
            when this many responses wait, and at least this often.
    """

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    jwt_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: list[JwtAlgorithm] = Field(default=["HS256"], min_length=1)  # pydantic copies it
    jwt_issuer: str = "towerflow"
    jwt_audience: str = "towerflow-gateway"
    rate_limit_user: int = 300
    rate_limit_token: int = 20_000
    rate_limit_window_s: int = 60
    retrieval_timeout_ms: float = 80.0
    ranking_timeout_ms: float = 80.0
    features_timeout_ms: float = 50.0
    redis_timeout_ms: float = 50.0
    breaker_cooldown_s: float = 1.0
    impressions_batch: int = Field(default=500, ge=1)
    impressions_flush_s: float = 5.0

    @property
    def secrets_dir(self) -> Path:
        """Development secrets (the JWT signing key `towerflow token` generates)."""
        return self.home_dir / "secrets"


#: Every role's settings class; each field is declared in exactly one of them.
ROLES: tuple[type[HomeSettings], ...] = (
    HomeSettings,
    EtlSettings,
    AirflowSettings,
    FeatureSettings,
    TrainingSettings,
    ModelServerSettings,
    ScoringSettings,
    StreamSettings,
    ExperimentSettings,
    MonitoringSettings,
    GatewaySettings,
)


class Settings(GatewaySettings, EtlSettings, AirflowSettings, TrainingSettings):
    """Every role's settings in one object: what `get_settings()` reads from the environment.

    The fields are declared, and documented, by role: HomeSettings (home, lake, Redis), EtlSettings,
    AirflowSettings, FeatureSettings, TrainingSettings, ModelServerSettings, ScoringSettings,
    StreamSettings, ExperimentSettings, MonitoringSettings and GatewaySettings. Each is read from `TOWERFLOW_<FIELD>`. A
    function that needs one role's settings takes that class; passing a `Settings` works everywhere.

    A `TOWERFLOW_*` variable that names no setting (a typo, or a setting since renamed) is
    logged once as a warning.
    """

    @model_validator(mode="after")
    def _warn_unknown_variables(self) -> Settings:
        for name in sorted(unknown_variables(os.environ) - _warned):
            _warned.add(name)
            log.warning("%s names no setting; it is ignored (see towerflow/settings.py)", name)
        return self


def unknown_variables(names: Iterable[str]) -> set[str]:
    """The `TOWERFLOW_*` names among `names` that no setting reads."""
    known = {f"{PREFIX}{field.upper()}" for field in Settings.model_fields}
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, AliasChoices):
            known |= {str(choice).upper() for choice in field.validation_alias.choices}
    return {
        name
        for name in names
        if name.upper().startswith(PREFIX) and name.upper() not in known and not name.upper().startswith(_NOT_SETTINGS)
    }


def get_settings() -> Settings:
    """Read settings now (not at import), so tests and tasks can set the environment first."""
    return Settings()
