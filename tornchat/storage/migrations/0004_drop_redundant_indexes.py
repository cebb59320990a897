"""Drop three indexes that no query needs and every send paid for.

Each message row fed five indexes. ``message (conversation_id)`` (the
foreign key's own) and ``message (conversation_id, created_at)`` serve
nothing that ``message (conversation_id, seq)`` does not: it leads with the
same column, so the foreign key's cascade and every per-conversation read
use it. ``participant (user_id)`` is the leading column of the unique
``participant (user_id, conversation_id)``. Without the three, PostgreSQL
spent 3-18% less CPU on a batch of 16 messages in the runs of
docs/performance.md ("A cheaper batch"); ``tests/storage/test_reads.py``
checks that every read still goes through an index. Dropping takes a
moment's exclusive lock; ``down()`` builds the three again without
``CONCURRENTLY``, so on a large ``message`` table writes wait for the build.
"""


def up(migrator, db):
    migrator.migrate(
        migrator.drop_index("message", "message_conversation_id"),
        migrator.drop_index("message", "message_conversation_id_created_at"),
        migrator.drop_index("participant", "participant_user_id"))


def down(migrator, db):
    migrator.migrate(
        migrator.add_index("message", ("conversation_id",), name="message_conversation_id"),
        migrator.add_index("message", ("conversation_id", "created_at"),
                           name="message_conversation_id_created_at"),
        migrator.add_index("participant", ("user_id",), name="participant_user_id"))
