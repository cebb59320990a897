"""Read position: ``participant.last_read_seq``, beside the seed's ``last_read_at``.

``unreadCount`` is ``conversation.last_seq - participant.last_read_seq``: one
subtraction, no row per user and message. Existing rows start at 0 (nothing
read); the next message a participant sends, or its next ``mark_read``, moves
it. The queries that read it are served by indexes that exist already:
``participant (user_id, conversation_id)`` for a user's conversation list and
``message (conversation_id, seq)`` for history and ``sync``.
"""

from peewee import BigIntegerField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("participant", "last_read_seq", BigIntegerField(default=0)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("participant", "last_read_seq"))
