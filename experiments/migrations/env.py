"""Alembic's environment for the experiments database (see experiments/store.py).

`experiments.store.migrate` passes an open connection, inside the transaction it holds (with
PostgreSQL's advisory lock, or SQLite's write lock); alembic commands run with
`experiments.store.alembic_config(url)` open their own from `sqlalchemy.url`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from experiments.store import VERSION_TABLE, Base, make_engine


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters a table by copying it
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: use experiments.store.alembic_config(url) or migrate(engine)")
    engine = make_engine(url)
    try:
        with engine.connect().execution_options(immediate=True) as connection:
            run(connection)
            connection.commit()
    finally:
        engine.dispose()


# Alembic runs this file as a script (as module `env_py`); imported as part of the package (a tool
# or test importing every module) it does nothing.
if __name__ != "experiments.migrations.env":
    if context.is_offline_mode():
        raise RuntimeError("the experiments migrations run online only (experiments.store.migrate)")
    main()
