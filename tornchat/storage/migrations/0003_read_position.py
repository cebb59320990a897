"""Read position: ``participant.last_read_seq``, beside the seed's ``last_read_at``.

``unreadCount`` is ``conversation.last_seq - participant.last_read_seq``: one
subtraction, no row per user and message. Existing rows start at the
participant's own newest message (what a send would have moved it to), so an
upgrade does not show a user their own messages as unread; the rest counts as
unread until the next ``mark_read``. The queries that read it are served by
indexes that exist already (docs/storage.md).
"""

from peewee import BigIntegerField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("participant", "last_read_seq", BigIntegerField(default=0)))
    db.execute_sql(
        "UPDATE participant SET last_read_seq = COALESCE((SELECT max(m.seq) FROM message AS m "
        "WHERE m.conversation_id = participant.conversation_id "
        "AND m.sender_id = participant.user_id), 0)")


def down(migrator, db):
    migrator.migrate(migrator.drop_column("participant", "last_read_seq"))
