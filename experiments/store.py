"""The experiments in a database: PostgreSQL when `TOWERFLOW_DATABASE_URL` names one (e.g.
`postgresql://towerflow@db:5432/towerflow`), else SQLite at `$TOWERFLOW_HOME/experiments.sqlite3`.

`ExperimentStore.open(url)` migrates the schema to the newest revision first (Alembic, the
revisions in experiments/migrations/versions/), so a new database, or one an older towerflow
created, needs no separate step. Concurrent openers are safe: on PostgreSQL they queue on an
advisory lock; on SQLite the migration holds the write lock (`BEGIN IMMEDIATE`), and both run
each migration in one transaction.

Two tables: `experiments` (one row each) and `experiment_arms` (its arms, in assignment order);
Alembic's revision is in `experiments_alembic_version`.
A partial unique index allows one `running` experiment per surface, so two writers racing to
start one cannot both succeed.

A new revision, after changing the tables below:
`alembic.command.revision(alembic_config(url), "what changed", autogenerate=True)` against a
database at the current head; check the file it writes into experiments/migrations/versions/.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.types import TypeDecorator

from experiments.domain import (
    DECISIONS,
    DEFAULT_SURFACE,
    MODELS,
    AlreadyStopped,
    Arm,
    Experiment,
    ExperimentNotFound,
    InvalidExperiment,
    NewExperiment,
    StoreUnavailable,
    SurfaceBusy,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Alembic's revision table, named for these migrations: the database may be one that another
#: Alembic user (Airflow's metadata DB) keeps its own `alembic_version` in.
VERSION_TABLE = "experiments_alembic_version"
SQLITE_FILE = "experiments.sqlite3"
#: pg_advisory_xact_lock key serializing migrations (any constant; "tfexp" in ASCII).
MIGRATION_LOCK = 0x7466657870
#: Seconds a PostgreSQL connect may take, and a SQLite writer waits for the lock.
CONNECT_TIMEOUT_S = 3
SQLITE_BUSY_TIMEOUT_S = 10


def default_url(home: Path) -> str:
    """The SQLite database under `home` (the embedded default)."""
    return f"sqlite:///{home / SQLITE_FILE}"


def redacted(url: str) -> str:
    """`url` without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: say so without repeating it
        return "<unparseable database URL>"


# -- tables ---------------------------------------------------------------------------------------


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps none: stored naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give experiments' times in UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class ExperimentRow(Base):
    __tablename__ = "experiments"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'stopped')", name="ck_experiments_status"),
        CheckConstraint(
            "decision IS NULL OR decision IN ({})".format(", ".join(f"'{d}'" for d in DECISIONS)),
            name="ck_experiments_decision",
        ),
        Index(
            "uq_experiments_running_surface",
            "surface",
            unique=True,
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    surface: Mapped[str] = mapped_column(String(64))
    salt: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    decision: Mapped[str | None] = mapped_column(String(32))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    canary_version: Mapped[int | None] = mapped_column(Integer)
    arms: Mapped[list[ArmRow]] = relationship(order_by="ArmRow.position", cascade="all, delete-orphan", lazy="selectin")

    def domain(self) -> Experiment:
        return Experiment(
            id=str(self.id),
            name=self.name,
            surface=self.surface,
            salt=self.salt,
            arms=tuple(
                Arm(name=a.name, share=a.share, models={"retrieval": a.retrieval, "ranking": a.ranking})
                for a in self.arms
            ),
            status=self.status,  # type: ignore[arg-type]  # the check constraint holds it to Status
            started_at=self.started_at,
            ended_at=self.ended_at,
            decision=self.decision,  # type: ignore[arg-type]  # likewise Decision
            decision_reason=self.decision_reason,
            canary_version=self.canary_version,
        )


class ArmRow(Base):
    __tablename__ = "experiment_arms"
    __table_args__ = (
        UniqueConstraint("experiment_id", "name", name="uq_experiment_arms_name"),
        CheckConstraint("share > 0 AND share <= 100", name="ck_experiment_arms_share"),
    )

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    #: Assignment order: an arm's users are those whose bucket falls in its stretch of the shares.
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(64))
    share: Mapped[float] = mapped_column(Double)
    retrieval: Mapped[str] = mapped_column(String(64))
    ranking: Mapped[str] = mapped_column(String(64))


# -- engine and migrations --------------------------------------------------------------------------


def make_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file's folder is created, and SQLite transactions are real
    ones (DDL included), as on PostgreSQL. `postgresql://` and `postgres://` mean psycopg2, the
    driver towerflow installs (SQLAlchemy 2.1's default for them is psycopg 3)."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            url = "postgresql+psycopg2://" + url.removeprefix(scheme)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

        # pysqlite begins transactions lazily, before DML only; take control of BEGIN instead
        # (SQLAlchemy's recipe), so a migration is atomic and `immediate` takes the write lock.
        @event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA foreign_keys = ON")

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            immediate = connection.get_execution_options().get("immediate", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_driver_name() == "psycopg2" else {}
    return create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args=connect_args)


def alembic_config(url: str | None = None) -> Any:
    """Alembic's config for these migrations (no alembic.ini); `url` for the alembic commands
    that open their own connection (`revision --autogenerate`)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine) -> None:
    """Upgrade the database to the newest revision, in one transaction.

    Raises:
        StoreUnavailable: the database is unreachable, or at a revision this code does not know
            (a newer towerflow migrated it).
    """
    from alembic import command
    from alembic.util.exc import CommandError

    config = alembic_config()
    try:
        with engine.connect().execution_options(immediate=True) as connection, connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except CommandError as err:
        raise StoreUnavailable(
            f"the experiments database {redacted(str(engine.url))} cannot be migrated: {err} "
            "(a newer towerflow migrated it? upgrade this one)"
        ) from None
    except DBAPIError as err:
        raise _unavailable(engine, err) from None


def _unavailable(engine: Engine, err: DBAPIError) -> StoreUnavailable:
    reason = str(err.orig).strip().splitlines()[0] if err.orig is not None else str(err)
    return StoreUnavailable(f"the experiments database {redacted(str(engine.url))} failed: {reason}")


# -- the store ------------------------------------------------------------------------------------


class ExperimentStore:
    """Create, read and stop experiments. Thread-safe; one per process is enough.

    Args:
        engine: the database (`make_engine`), already migrated (`open` does both).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str) -> ExperimentStore:
        """The store at `url`, its schema migrated to the newest revision.

        Raises:
            StoreUnavailable: see `migrate`.
        """
        engine = make_engine(url)
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ExperimentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """A session in one transaction (SQLite writers take the write lock up front, so a
        check-then-insert cannot interleave with another writer's)."""
        try:
            with self.engine.connect().execution_options(immediate=write) as connection:
                with self._sessions(bind=connection) as session, session.begin():
                    yield session
        except IntegrityError:
            raise
        except DBAPIError as err:
            raise _unavailable(self.engine, err) from None

    def create(
        self,
        *,
        name: str,
        arms: Sequence[Arm | Mapping[str, Any]],
        surface: str = DEFAULT_SURFACE,
        salt: str | None = None,
        at: datetime | None = None,
        canary_version: int | None = None,
    ) -> Experiment:
        """Start an experiment on `surface` now (or `at`).

        Args:
            name: what it tests, for people.
            arms: in assignment order; shares in percent summing to 100; models absent from an
                arm's `models` serve `stable`.
            salt: reuse one to keep every user in the arm an earlier experiment gave them;
                None draws a new one.
            canary_version: the model version whose publication as `canary` starts it (the
                publish task's automatic canary experiment); None when a person starts it.

        Raises:
            InvalidExperiment: a field is invalid (422).
            SurfaceBusy: an experiment is already running on `surface` (409).
        """
        fields = {
            "name": name,
            "surface": surface,
            "arms": [a.model_dump() if isinstance(a, Arm) else a for a in arms],
            "salt": salt,
            "canary_version": canary_version,
        }
        new = NewExperiment.parse(fields)
        try:
            with self._session(write=True) as session:
                self._refuse_busy(session, new.surface)
                row = ExperimentRow(
                    name=new.name,
                    surface=new.surface,
                    salt=new.salt or secrets.token_hex(8),
                    status="running",
                    started_at=at or datetime.now(UTC),
                    canary_version=new.canary_version,
                    arms=[
                        ArmRow(position=n, name=a.name, share=a.share, **{m: a.models[m] for m in MODELS})
                        for n, a in enumerate(new.arms)
                    ],
                )
                session.add(row)
                session.flush()
                return row.domain()
        except IntegrityError:  # another writer started one on this surface in between
            with self._session() as session:
                self._refuse_busy(session, new.surface)
            raise

    def _refuse_busy(self, session: Session, surface: str) -> None:
        running = session.scalar(
            select(ExperimentRow).where(ExperimentRow.surface == surface, ExperimentRow.status == "running")
        )
        if running is not None:
            raise SurfaceBusy(surface, running.domain())

    def get(self, experiment_id: str | int) -> Experiment:
        """The experiment with this id.

        Raises:
            ExperimentNotFound: no such id (404).
        """
        with self._session() as session:
            return self._row(session, experiment_id).domain()

    def _row(self, session: Session, experiment_id: str | int) -> ExperimentRow:
        key = str(experiment_id).strip()
        row = session.get(ExperimentRow, int(key)) if key.isdigit() and len(key) < 19 else None
        if row is None:
            raise ExperimentNotFound(experiment_id)
        return row

    def list(self, *, status: str | None = None, surface: str | None = None) -> list[Experiment]:
        """Experiments, newest first; only those with `status` / on `surface` when given."""
        query = select(ExperimentRow).order_by(ExperimentRow.id.desc())
        if status is not None:
            query = query.where(ExperimentRow.status == status)
        if surface is not None:
            query = query.where(ExperimentRow.surface == surface)
        with self._session() as session:
            return [row.domain() for row in session.scalars(query)]

    def running(self) -> dict[str, Experiment]:
        """The running experiment of each surface that has one (what the gateway serves)."""
        return {e.surface: e for e in self.list(status="running")}

    def stop(
        self,
        experiment_id: str | int,
        *,
        decision: str | None = None,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> Experiment:
        """End an experiment now (or `at`): its surface serves `control` on `stable` again until
        another starts. Promoting or rolling back model versions is the caller's part.

        Args:
            decision: `promote`, `rollback` or `inconclusive`; None when stopped without one.
            reason: why, in words.

        Raises:
            ExperimentNotFound: no such id (404).
            InvalidExperiment: an unknown decision (422).
            AlreadyStopped: it has ended already (409).
        """
        if decision is not None and decision not in DECISIONS:
            raise InvalidExperiment("decision", f"{decision!r} is not one of {', '.join(DECISIONS)}")
        with self._session(write=True) as session:
            row = self._row(session, experiment_id)
            if row.status != "running":
                raise AlreadyStopped(row.domain())
            row.status = "stopped"
            row.ended_at = at or datetime.now(UTC)
            row.decision = decision
            row.decision_reason = reason
            session.flush()
            return row.domain()
