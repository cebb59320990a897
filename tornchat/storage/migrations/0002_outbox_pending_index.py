"""Partial index on unsent outbox rows, in id order.

The relay asks for the oldest unsent rows many times a second, and the
backlog gauge counts them; with this index both cost the size of the backlog,
not of the retained history of sent rows.
"""

from peewee import SQL


def up(migrator, db):
    migrator.migrate(
        migrator.add_index("outbox", ("id",), where=SQL("sent_at IS NULL"),
                           name="outbox_pending"))


def down(migrator, db):
    migrator.migrate(migrator.drop_index("outbox", "outbox_pending"))
