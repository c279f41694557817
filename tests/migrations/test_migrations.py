"""Migrations: head -> base -> head works, and the models match the migrations (no drift)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import Column, Integer, MetaData, Table, inspect

from myapp import create_app
from myapp.extensions import db
from tests.conftest import TEST_DB_NAME, drop_database, make_settings, recreate_database


@pytest.fixture(scope="module")
def migration_app():
    """An app on its own database, so walking the history disturbs no other test."""
    name = f"{TEST_DB_NAME}_migrations"
    app = create_app(make_settings(database_url=recreate_database(name)))
    yield app
    with app.app_context():
        db.engine.dispose()
    drop_database(name)


def schema_diff(metadata: MetaData) -> list:
    with db.engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), metadata)


def table_names() -> set[str]:
    return set(inspect(db.engine).get_table_names())


def test_upgrade_downgrade_upgrade_and_no_drift(migration_app):
    with migration_app.app_context():
        upgrade()
        at_head = table_names()
        assert "alembic_version" in at_head
        downgrade(revision="base")
        assert table_names() - {"alembic_version"} == set()
        upgrade()
        assert table_names() == at_head
        assert schema_diff(db.metadata) == []


def test_drift_check_notices_a_model_without_migration(migration_app):
    with migration_app.app_context():
        upgrade()
        extended = MetaData(naming_convention=db.metadata.naming_convention)
        for table in db.metadata.tables.values():
            table.to_metadata(extended)
        Table("not_migrated", extended, Column("id", Integer, primary_key=True))
        diff = schema_diff(extended)
        assert [(op, t.name) for op, t, *_ in diff] == [("add_table", "not_migrated")]
