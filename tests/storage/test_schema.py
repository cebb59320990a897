"""The migrated schema: each index serves a query, and each migration can be undone."""

from __future__ import annotations

import pytest
from playhouse.migrations import Runner

from tornchat.storage.database import open_database
from tornchat.storage.schema import MIGRATIONS_DIR, migrate

#: every index a send pays for, by table (docs/storage.md says which read each serves)
EXPECTED_INDEXES = {
    "message": {"message_conversation_id_seq", "message_sender_id_client_message_id"},
    "participant": {"participant_conversation_id", "participant_user_id_conversation_id"},
}


def _indexes(database, table: str) -> set[str]:
    return {index.name for index in database.get_indexes(table)
            if not index.name.endswith("_pkey") and not index.name.startswith("sqlite_")}


def _indexes_by_table(database) -> dict[str, set[str]]:
    return {table: _indexes(database, table) for table in EXPECTED_INDEXES}


@pytest.fixture
def database(database_url):
    database = open_database(database_url, 1)
    migrate(database)
    yield database
    database.close()


def test_a_message_row_feeds_only_the_indexes_some_read_needs(database):
    with database.connection_context():
        assert _indexes_by_table(database) == EXPECTED_INDEXES


def test_dropping_the_redundant_indexes_can_be_undone(database):
    with database.connection_context():
        assert Runner(database, directory=MIGRATIONS_DIR).down() == [
            "0004_drop_redundant_indexes"]
        assert _indexes_by_table(database) == {
            "message": EXPECTED_INDEXES["message"] | {
                "message_conversation_id", "message_conversation_id_created_at"},
            "participant": EXPECTED_INDEXES["participant"] | {"participant_user_id"}}
    migrate(database)
    with database.connection_context():
        assert _indexes_by_table(database) == EXPECTED_INDEXES
