"""Async SQLModel engine per service: a SQLite file by default, PostgreSQL (schema per service) by URL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from inspect import Signature, signature
from typing import Any

from sqlalchemy import Column, DateTime, event, func, insert_sentinel, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import instrumentation
from sqlalchemy.schema import Table
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.main import finish_init  # type: ignore[attr-defined]  # SQLModel: "make the object, or leave it to model_validate"

from shared.batches import batch_memo
from shared.settings import Settings
from shared.sqlite_one_hop import one_hop_dbapi


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Gantry stores aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def database_url(service: str, settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    settings.home.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{(settings.home / f'{service}.db').resolve()}"


def make_engine(service: str, settings: Settings) -> AsyncEngine:
    url = database_url(service, settings)
    if url.startswith("sqlite"):
        dbapi = one_hop_dbapi()
        options = {"module": dbapi} if dbapi is not None else {}
        engine = create_async_engine(url, connect_args={"timeout": 30}, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # One PostgreSQL database, one schema per service: services never read each other's tables.
    return create_async_engine(
        url,
        pool_pre_ping=True,
        connect_args={"server_settings": {"search_path": service}},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


SENTINEL = "insert_sentinel"


def inserted_together(*models: type[SQLModel]) -> None:
    """Let SQLAlchemy insert many new rows of these tables (integer ids the database gives) in one
    statement. On SQLite it cannot tell which generated id belongs to which row of a multi-row
    INSERT, so it inserts them one statement each; a sentinel column (a number SQLAlchemy gives
    each row of the statement, nullable, kept out of every SELECT) lets it match them up. Older
    databases get the column at start-up (``_add_missing_columns``)."""
    for model in models:
        table: Table = model.__table__  # type: ignore[attr-defined]
        if SENTINEL not in table.columns:
            table.append_column(insert_sentinel(SENTINEL))


def quick_table_rows(models: Sequence[type[SQLModel]]) -> None:
    """Make these tables' row objects the quick way: factories signed (``quick_default_factories``)
    and each given value or default put straight into the new object (``_quick_init``)."""
    quick_default_factories(models)
    for model in models:
        manager = instrumentation.manager_of_class(model)
        if manager is None or manager.original_init is not SQLModel.__init__:
            continue  # made quick already, or the model makes its objects itself
        extra = model.model_config.get("extra") == "allow"
        if model.__sqlmodel_relationships__ or extra or model.__pydantic_post_init__:
            continue  # SQLModel's own way, which knows what to do with these
        manager.original_init = _quick_init(model)


def _quick_init(model: type[SQLModel]) -> Callable[..., None]:
    """What SQLModel's ``__init__`` does for a new table object, without its detours. SQLModel
    sets each field through ``setattr``: SQLAlchemy's attribute event (history for a row that has
    none yet), then pydantic's own ``__setattr__``, about 2 µs a field; a deployment's 27 fields
    cost 82 µs to make, 26 µs this way (``python -m bench.statements``). Like SQLModel's, it does
    not validate; SQLAlchemy still sets its state up (the generated ``__init__`` does, then calls
    this), and the INSERT reads the values from the object's ``__dict__`` as before."""
    fields = tuple(
        (name, field.alias if field.alias and field.alias != name else None, field)
        for name, field in model.model_fields.items()
    )

    def init(self: SQLModel, **data: Any) -> None:
        if not finish_init.get():  # model_validate fills the object itself, as SQLModel leaves it to
            return
        values, given = self.__dict__, set()
        for name, alias, field in fields:
            if alias is not None and alias in data:
                values[name] = data[alias]
                given.add(name)
            elif name in data:
                values[name] = data[name]
                given.add(name)
            elif not field.is_required():
                values[name] = field.get_default(call_default_factory=True)
        object.__setattr__(self, "__pydantic_fields_set__", given)
        object.__setattr__(self, "__pydantic_extra__", None)
        object.__setattr__(self, "__pydantic_private__", None)

    init.quick = True  # type: ignore[attr-defined]
    return init


def quick_default_factories(models: Sequence[type[SQLModel]]) -> None:
    """Give each default factory of these tables its signature beforehand. SQLModel makes a table
    object's defaults through pydantic's ``FieldInfo.get_default``, which asks at every call whether
    the factory takes the validated data: ``inspect.signature`` of ``list`` costs about 77 µs, of
    ``dict`` more (it has none: an exception each time), of a function about 7 µs. A deployment's
    row cost 250 µs of CPU to make, 130 µs with its factories signed (``python -m bench.statements``)."""
    for model in models:
        for field in model.model_fields.values():
            factory = field.default_factory
            if factory is not None and not hasattr(factory, "__signature__"):
                field.default_factory = _signed(factory)


def _signed(factory: Callable[..., Any]) -> Callable[..., Any]:
    try:
        known = signature(factory)
    except ValueError:  # a builtin without one, such as dict: called with nothing
        known = Signature()

    def make(*args: Any) -> Any:
        return factory(*args)

    make.__signature__ = known  # type: ignore[attr-defined]
    make.__name__ = getattr(factory, "__name__", "factory")
    return make


async def create_tables(engine: AsyncEngine, service: str, tables: Sequence[type[SQLModel]]) -> None:
    """Create the service's schema (PostgreSQL) and its tables if missing."""
    table_objects: list[Table] = [model.__table__ for model in tables]  # type: ignore[attr-defined]
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Replicas starting together would race on the DDL: one at a time, per service.
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": service})
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{service}"'))
        await conn.run_sync(SQLModel.metadata.create_all, tables=table_objects)
        await conn.run_sync(_add_missing_columns, table_objects)
        await conn.run_sync(_add_missing_indexes, table_objects)


def _add_missing_columns(conn: Connection, tables: Sequence[Table]) -> None:
    """Add the columns a newer Gantry declares to tables an older one created.

    Only additions are made here, and only of columns an existing row can take: nullable ones,
    or ones with a constant default (``Field(default=…)``), which old rows get. A renamed or
    retyped column is a change this cannot make; Gantry says so and stops."""
    inspector = inspect(conn)
    for table in tables:
        present = {column["name"] for column in inspector.get_columns(table.name, schema=table.schema)}
        for column in table.columns:
            if column.name not in present:
                conn.execute(text(_add_column_ddl(conn, table, column)))


def _add_missing_indexes(conn: Connection, tables: Sequence[Table]) -> None:
    """Create the indexes a newer Gantry declares on tables an older one created (``create_all``
    makes a table's indexes only with the table)."""
    for table in tables:
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _add_column_ddl(conn: Connection, table: Table, column: Column[Any]) -> str:
    preparer = conn.dialect.identifier_preparer
    name = preparer.format_column(column)
    kind = column.type.compile(dialect=conn.dialect)
    ddl = f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {name} {kind}"
    default = getattr(column.default, "arg", None) if column.default is not None and column.default.is_scalar else None
    if default is not None:
        if isinstance(default, bool):
            value = "TRUE" if default else "FALSE"
        else:
            literal = column.type.literal_processor(conn.dialect)
            value = literal(default) if literal else default
        return f"{ddl} DEFAULT {value}" + ("" if column.nullable else " NOT NULL")
    if column.nullable:
        return ddl
    raise RuntimeError(
        f"table {table.name} in this database lacks the column {column.name}, which has no default to give "
        "the rows already there: this Gantry cannot upgrade that database by itself"
    )


async def serialize_on(session: AsyncSession, name: str) -> None:
    """Make transactions about the same ``name`` take turns, until this one ends.

    PostgreSQL (read committed) lets two transactions each miss the other's uncommitted row: a
    transaction-scoped advisory lock makes the second wait, then read what the first committed.
    SQLite (WAL) needs nothing: a transaction that read before another one's commit cannot write
    after it, fails as busy and is retried whole. A consumer's batch holds its locks until it
    commits; one it took already is not asked for again (``shared.batches.batch_memo``)."""
    await serialize_on_all(session, [name])


# Several advisory locks in one statement, in the order given (a subquery's order is the order
# its rows reach the aggregate, so the locks are taken one after the other in it).
_LOCK_ALL = text(
    "SELECT count(pg_advisory_xact_lock(hashtext(name))) "
    "FROM (SELECT name FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS given(name, n) ORDER BY n) AS ordered"
)


async def serialize_on_all(session: AsyncSession, names: Sequence[str]) -> None:
    """``serialize_on`` for each of ``names``, sorted, in one statement: what a batch takes before
    it reads ahead for its events, each of which takes its own (two batches that share some
    names take them in the same order, so neither waits for the other while holding what it needs)."""
    if session.get_bind().dialect.name != "postgresql":
        return

    async def take(wanted: list[str]) -> None:
        if len(wanted) == 1:
            await session.exec(select(func.pg_advisory_xact_lock(func.hashtext(wanted[0]))))
        else:
            await (await session.connection()).execute(_LOCK_ALL, {"names": wanted})

    await lock_once(session, "lock", names, take)


async def lock_once(
    session: AsyncSession, kind: str, names: Iterable[str], take: Callable[[list[str]], Awaitable[object]]
) -> None:
    """Lock ``names`` with ``take`` (called once with them sorted), but in a consumer's batch not
    those it holds already under ``kind``: the batch locks what it reads ahead for, and each of its
    events asks for its own again. What the batch holds is kept in its memo
    (``shared.batches.batch_memo``), which is emptied when a use case fails: locks taken in its
    savepoint went with it. Outside a batch, every name is locked."""
    held = batch_memo(session)
    wanted = sorted({name for name in names if held is None or (kind, name) not in held})
    if not wanted:
        return
    await take(wanted)
    if held is not None:
        held.update(((kind, name), True) for name in wanted)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
