"""The one settings object. Every other module takes typed arguments, not the environment.

Values come from `TOWERFLOW_*` environment variables (or a `.env` file in the working folder).
`REDIS_URL` is accepted as well as `TOWERFLOW_REDIS_URL`, because that is what docker-compose
and most hosting platforms set.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LAYERS = ("landing", "bronze", "silver", "gold")


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
        model_server_port: gRPC port of the model server (TF Serving's default, 8500).
        model_server_poll_seconds: how often the built-in model server re-reads `models.config`
            and rescans the version folders.
        model_server_workers: request threads of the built-in model server.
    """

    model_config = SettingsConfigDict(
        env_prefix="TOWERFLOW_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    home: Path = Path("var")
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TOWERFLOW_REDIS_URL", "REDIS_URL")
    )
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    spark_conf: dict[str, str] = Field(default_factory=dict)
    lake_uri: str | None = None
    storage_options: dict[str, str] = Field(default_factory=dict)
    shared_data: Path = Path("../shared/data")
    ingest_lookback_days: int = 3  # a daily run also picks up landing files of missed days
    airflow_db_url: str | None = None  # e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/airflow
    airflow_parallelism: int = 2  # airflow standalone needs ~5 GB at defaults; keep it small
    ci: bool = Field(default=False, validation_alias=AliasChoices("TOWERFLOW_CI", "CI"))
    model_server_port: int = 8500
    model_server_poll_seconds: float = 2.0
    model_server_workers: int = 4
    delta_engine: Literal["auto", "delta-rs", "spark"] = "auto"
    holdout_days: int = 7
    dq_max_day_ratio: float = 10.0
    feast_project: str = Field(default="towerflow", pattern=r"^[A-Za-z0-9_]+$")
    feature_env: Literal["auto", "redis", "embedded"] = "auto"

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
    def staging_dir(self) -> Path:
        """Scratch space for Spark output on its way into delta-rs."""
        return self.home_dir / "staging"


def get_settings() -> Settings:
    """Read settings now (not at import), so tests and tasks can set the environment first."""
    return Settings()
