"""Row objects made the quick way (``shared.db.quick_table_rows``) are the ones SQLModel makes.

Every table of every service is made both ways, with every field given and with none given, and
compared: the pydantic view (``model_dump``, the fields counted as set), the object's ``__dict__``
and the row each one INSERTs into a real SQLite file."""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlmodel.main
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import instrumentation
from sqlmodel import SQLModel

from services.catalog.app import TABLES as CATALOG_TABLES
from services.deploy.models import DEPLOY_TABLES, Deployment
from services.gateway.app import TABLES as GATEWAY_TABLES
from services.release.models import TABLES as RELEASE_TABLES
from services.versioning.app import TABLES as VERSIONING_TABLES
from shared.db import quick_table_rows, session_factory
from shared.outbox import OUTBOX_TABLES

ALL_TABLES: list[type[SQLModel]] = list(
    dict.fromkeys(
        [*OUTBOX_TABLES, *CATALOG_TABLES, *GATEWAY_TABLES, *VERSIONING_TABLES, *RELEASE_TABLES, *DEPLOY_TABLES]
    )
)
AT = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)


def _sample(annotation: Any, name: str) -> Any:
    """A value of the field's type, not its default."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _sample(next(arg for arg in typing.get_args(annotation) if arg is not type(None)), name)
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)[-1]
    origin = typing.get_origin(annotation) or annotation
    samples = {str: f"{name}-given", int: 7, bool: True, datetime: AT, list: [f"{name}-item"], dict: {name: "v"}}
    return samples[origin]


def _every_field(model: type[SQLModel]) -> dict[str, Any]:
    return {name: _sample(field.annotation, name) for name, field in model.model_fields.items()}


def _sqlmodels_way(model: type[SQLModel], monkeypatch: pytest.MonkeyPatch, values: dict[str, Any]) -> SQLModel:
    with monkeypatch.context() as patch:
        patch.setattr(instrumentation.manager_of_class(model), "original_init", SQLModel.__init__)
        return model(**values)


def _view(row: SQLModel, *, but: frozenset[str] = frozenset()) -> tuple[dict[str, Any], set[str], list[str]]:
    dump = {key: value for key, value in row.model_dump().items() if key not in but}
    return dump, row.__pydantic_fields_set__, sorted(row.__dict__)


@pytest.fixture(scope="module", autouse=True)
def _quick() -> None:
    quick_table_rows(ALL_TABLES)


def test_every_service_table_is_made_the_quick_way() -> None:
    for model in ALL_TABLES:
        assert getattr(instrumentation.manager_of_class(model).original_init, "quick", False), model.__name__


def test_a_quick_row_sets_no_field_through_sqlalchemys_events(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = sqlmodel.main.set_attribute

    def counted(instance: Any, key: str, value: Any) -> None:
        seen.append(key)
        real(instance, key, value)

    monkeypatch.setattr(sqlmodel.main, "set_attribute", counted)
    Deployment(**_every_field(Deployment))
    assert seen == []
    _sqlmodels_way(Deployment, monkeypatch, _every_field(Deployment))  # the way it replaces did
    assert len(seen) == len(Deployment.model_fields)


@pytest.mark.parametrize("model", ALL_TABLES, ids=lambda model: model.__name__)
def test_a_quick_row_is_sqlmodels_row_with_every_field_given(model: type[SQLModel], monkeypatch) -> None:
    values = _every_field(model)
    quick, slow = model(**values), _sqlmodels_way(model, monkeypatch, values)
    assert _view(quick) == _view(slow)
    assert quick == slow


@pytest.mark.parametrize("model", ALL_TABLES, ids=lambda model: model.__name__)
def test_a_quick_row_is_sqlmodels_row_with_its_defaults(model: type[SQLModel], monkeypatch) -> None:
    made = frozenset(name for name, field in model.model_fields.items() if field.default_factory is not None)
    quick, slow = model(), _sqlmodels_way(model, monkeypatch, {})
    assert _view(quick, but=made) == _view(slow, but=made)
    for name in made:  # made afresh for each object, of the same kind
        assert type(getattr(quick, name)) is type(getattr(slow, name)), name
        if isinstance(getattr(quick, name), list | dict):
            assert getattr(quick, name) is not getattr(slow, name)


async def test_a_quick_row_inserts_what_sqlmodels_row_inserts(tmp_path: Path, monkeypatch) -> None:
    inserted = []
    for way, folder in (("quick", tmp_path / "quick"), ("sqlmodel", tmp_path / "sqlmodel")):
        folder.mkdir()
        # a plain engine: foreign keys unchecked, so each table takes its one row alone
        engine = create_async_engine(f"sqlite+aiosqlite:///{folder / 'rows.db'}")
        async with engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all, tables=[model.__table__ for model in ALL_TABLES])  # type: ignore[attr-defined]
        rows: dict[str, list[tuple[Any, ...]]] = {}
        async with session_factory(engine)() as session:
            for model in ALL_TABLES:
                values = _every_field(model)
                session.add(model(**values) if way == "quick" else _sqlmodels_way(model, monkeypatch, values))
            await session.commit()
            for model in ALL_TABLES:
                table = model.__table__  # type: ignore[attr-defined]
                found = await (await session.connection()).execute(select(table))
                rows[model.__name__] = [tuple(row) for row in found.all()]
        await engine.dispose()
        inserted.append(rows)
    quick, slow = inserted
    assert quick == slow
    assert all(len(found) == 1 for found in quick.values())


def test_a_row_read_back_through_model_validate_is_still_sqlmodels(monkeypatch) -> None:
    values = _every_field(Deployment)
    assert Deployment.model_validate(values) == _sqlmodels_way(Deployment, monkeypatch, values)
