"""The one settings object. Every other module takes typed arguments, not the environment.

Values come from `TOWERFLOW_*` environment variables (or a `.env` file in the working folder).
`REDIS_URL` is accepted as well as `TOWERFLOW_REDIS_URL`, because that is what docker-compose
and most hosting platforms set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from jobs.gold import HoldoutSize

LAYERS = ("landing", "bronze", "silver", "gold")
PREFIX = "TOWERFLOW_"
# Read by other tools, not settings: the CLI's client token, benchmarks and test services.
_NOT_SETTINGS = ("TOWERFLOW_TOKEN", "TOWERFLOW_BENCH_", "TOWERFLOW_TEST_")
_warned: set[str] = set()

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    """Where things live and which services to use.

    Attributes:
        home: root for everything the project writes (lake, feature registry, models, Airflow).
        redis_url: Redis for the online store, event stream and rate limits; None = embedded.
        spark_master: Spark master URL; `local[*]` on a laptop, a cluster URL elsewhere.
        spark_conf: extra Spark conf (JSON object in the environment), applied last.
        lake_uri: lake root when it is not under `home` (e.g. `s3://bucket/lake`).
        storage_options: delta-rs storage options for `lake_uri` (JSON object).
        ci: true under CI; tests that need a service or shared data fail instead of skipping.
        feast_project: Feast project name; also the suffix of every online-store key.
        feature_env: `auto` (Redis when `redis_url` answers, else embedded), `redis` or `embedded`.
        holdout_days / holdout_min_users / holdout_min_events / holdout_max_days: the holdout is
            the last `holdout_days` days before a run date, longer (up to `holdout_max_days`, and
            at most half the data) until each evaluation variant has `holdout_min_users` users
            and it holds `holdout_min_events` positives (`jobs.gold.choose_cutoff`).
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
        model_server_target: `host:port` the gateway calls (default 127.0.0.1:<model_server_port>).
        gateway_host / gateway_port: where `towerflow serve` binds the HTTP gateway.
        airflow_db_url: Airflow's metadata DB (also read from AIRFLOW__DATABASE__SQL_ALCHEMY_CONN);
            None = SQLite under `<home>/airflow`.
        airflow_parallelism: Airflow's parallelism and max active tasks per DAG.
        airflow_api_host / airflow_api_port: where `towerflow airflow standalone` serves the UI.
        redis_prefix: prefix of the gateway's own Redis keys (rate limits, precomputed recs).
        jwt_key: HS* secret or PEM public key that verifies bearer tokens; default: the
            development secret under `<home>/secrets/` (`towerflow token` creates it).
        jwt_jwks_url: verify against this JWKS instead (keys picked by `kid`).
        jwt_algorithms: accepted JWT algorithms.
        jwt_issuer / jwt_audience: required `iss` / `aud` claims.
        rate_limit_user / rate_limit_token: requests per `rate_limit_window_s` per user id and
            per token; 0 turns that limit off.
        retrieval_timeout_ms / ranking_timeout_ms / features_timeout_ms / redis_timeout_ms:
            per-stage time budgets; past one the request degrades instead of waiting.
        breaker_cooldown_s: after a dependency fails, skip it for this long, then probe again.
        experiments_path: A/B config (JSON); default `<home>/experiments.json`, absent = one arm.
        category_cap: at most this share of a response from one category (soft: filled up
            from the overflow when too few categories remain).
        freshness_boost / freshness_half_life_days: score += boost * 2^(-age_days / half-life).
        popular_size: popular items held in memory for the fallback path.
        precomputed_ttl_s: how long precomputed recommendations live in Redis.
        impressions_batch_rows / impressions_flush_s: impression log flush triggers.
        log_format: `text`, or `json` (one object a line with the request id; `towerflow.logs`).
        stream_backend: the event stream (streams/): `auto` (Kafka when `kafka_bootstrap_servers`
            is set, else Redis Streams when `redis_url` is set, else the local durable queue),
            `redis`, `kafka` or `local`.
        kafka_bootstrap_servers: Kafka brokers (`host:port,...`; also KAFKA_BOOTSTRAP_SERVERS).
        stream_name: the events stream (Redis key suffix / Kafka topic / local queue name).
        stream_reclaim_after_s: a record read but not acked this long is handed to another consumer.

    A `TOWERFLOW_*` variable that names no setting (a typo, or a setting since renamed) is
    logged once as a warning.
    """

    model_config = SettingsConfigDict(env_prefix="TOWERFLOW_", env_file=".env", env_ignore_empty=True, extra="ignore")

    home: Path = Path("var")
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("TOWERFLOW_REDIS_URL", "REDIS_URL"))
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    spark_conf: dict[str, str] = Field(default_factory=dict)
    lake_uri: str | None = None
    storage_options: dict[str, str] = Field(default_factory=dict)
    shared_data: Path = Path("../shared/data")
    ingest_lookback_days: int = 3  # a daily run also picks up landing files of missed days
    airflow_db_url: str | None = Field(  # e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/airflow
        default=None,
        validation_alias=AliasChoices("TOWERFLOW_AIRFLOW_DB_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
    )
    airflow_parallelism: int = 2  # airflow standalone needs ~5 GB at defaults; keep it small
    airflow_api_host: str = "127.0.0.1"  # `towerflow airflow standalone`: where the UI/API listens
    airflow_api_port: int = 8080
    ci: bool = Field(default=False, validation_alias=AliasChoices("TOWERFLOW_CI", "CI"))
    model_server_port: int = 8500
    model_server_host: str = "127.0.0.1"
    model_server_max_request_bytes: int = Field(default=64 * 1024 * 1024, gt=0, le=2**31 - 1)  # gRPC takes an int32
    model_server_poll_seconds: float = 2.0
    model_server_workers: int = 4
    model_server_intra_op_threads: int = Field(default=0, ge=0)
    model_server_inter_op_threads: int = Field(default=0, ge=0)
    delta_engine: Literal["auto", "delta-rs", "spark"] = "auto"
    holdout_days: int = Field(default=7, ge=1)
    holdout_min_users: int = Field(default=100, ge=0)
    holdout_min_events: int = Field(default=500, ge=0)
    holdout_max_days: int = Field(default=28, ge=1)
    train_seed: int = 42
    gate_metric: str = "recall@100"  # the primary metric a choice must hold on (models.gate)
    gate_variants: str = Field(default="all,new", pattern=r"^(all|new|unseen)(,(all|new|unseen))*$")  # comma-separated
    gate_margin: float = 0.0
    refit: bool = True  # publish the gate's choice refit through the run date (models.lifecycle.refit_run)
    dq_max_day_ratio: float = 10.0
    feast_project: str = Field(default="towerflow", pattern=r"^[A-Za-z0-9_]+$")
    feature_env: Literal["auto", "redis", "embedded"] = "auto"
    # Gateway (serving/gateway/main.py)
    model_server_target: str | None = None
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    redis_prefix: str = "towerflow:"
    jwt_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
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
    experiments_path: Path | None = None
    category_cap: float = Field(default=0.4, gt=0, le=1)
    freshness_boost: float = 0.05
    freshness_half_life_days: float = 30.0
    popular_size: int = 500
    precomputed_ttl_s: int = 3 * 86_400
    impressions_batch_rows: int = 5_000
    impressions_flush_s: float = 5.0
    log_format: Literal["text", "json"] = "text"
    # Event stream (streams/)
    stream_backend: Literal["auto", "redis", "kafka", "local"] = "auto"
    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias=AliasChoices("TOWERFLOW_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS")
    )
    stream_name: str = Field(default="events", pattern=r"^[A-Za-z0-9._-]+$")
    stream_reclaim_after_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _warn_unknown_variables(self) -> Settings:
        for name in sorted(unknown_variables(os.environ) - _warned):
            _warned.add(name)
            log.warning("%s names no setting; it is ignored (see towerflow/settings.py)", name)
        return self

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
        return self.home_dir / "models"

    @property
    def feature_registry_dir(self) -> Path:
        return self.home_dir / "feast"

    @property
    def airflow_home(self) -> Path:
        return self.home_dir / "airflow"

    @property
    def reports_dir(self) -> Path:
        return self.home_dir / "reports"

    @property
    def data_docs_dir(self) -> Path:
        """Great Expectations Data Docs (HTML) of the pipeline's quality gates."""
        return self.reports_dir / "data_docs"

    @property
    def secrets_dir(self) -> Path:
        """Development secrets (the JWT signing key `towerflow token` generates)."""
        return self.home_dir / "secrets"

    @property
    def model_target(self) -> str:
        """`host:port` of the model server the gateway calls."""
        return self.model_server_target or f"127.0.0.1:{self.model_server_port}"

    @property
    def experiments_file(self) -> Path:
        return self.experiments_path or self.home_dir / "experiments.json"

    def holdout_size(self, min_days: int | None = None) -> HoldoutSize:
        """The holdout's sizing rules; `min_days` instead of `holdout_days` when given."""
        from jobs.gold import HoldoutSize

        return HoldoutSize(
            min_days=min_days or self.holdout_days,
            min_users=self.holdout_min_users,
            min_events=self.holdout_min_events,
            max_days=self.holdout_max_days,
        )

    @property
    def streams_dir(self) -> Path:
        """The local durable queue's files (the embedded event stream)."""
        return self.home_dir / "streams"

    @property
    def staging_dir(self) -> Path:
        """Scratch space for Spark output on its way into delta-rs."""
        return self.home_dir / "staging"


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
