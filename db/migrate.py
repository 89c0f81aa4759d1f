"""Apply Alembic migrations programmatically (start-up and ``voicegender db upgrade``).

Every process (CLI, API, each worker) migrates at start-up, often at the same
moment on a fresh database; the upgrade is serialised across processes so a
second one waits and then finds the schema at head instead of failing with
"table alembic_version already exists".
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, make_url, pool, text

try:
    import fcntl
except ImportError:  # Windows: SQLite migrations there are not serialised
    fcntl = None

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
PG_MIGRATION_LOCK = 7_412_953  # pg_advisory_lock key held while migrating


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_database(url: str, revision: str = "head") -> None:
    with migration_lock(url) as connection:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def downgrade_database(url: str, revision: str = "base") -> None:
    with migration_lock(url) as connection:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


@contextmanager
def migration_lock(url: str) -> Iterator[Connection]:
    """A connection to run migrations on, held under a lock no other process holds.

    PostgreSQL: a session-level advisory lock on that connection. SQLite: an
    exclusive ``flock`` on ``<database>.migrate.lock`` next to the file.
    """
    parsed = make_url(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with _file_lock(parsed.database if parsed.get_backend_name() == "sqlite" else None), engine.connect() as conn:
            if parsed.get_backend_name() == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_MIGRATION_LOCK})
                conn.commit()
            yield conn  # closing the connection releases the advisory lock
            conn.commit()
    finally:
        engine.dispose()


@contextmanager
def _file_lock(database: str | None) -> Iterator[None]:
    if fcntl is None or not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
