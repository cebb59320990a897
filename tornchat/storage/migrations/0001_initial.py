"""Initial schema: conversation, participant, message, outbox.

A frozen copy of the models as they were when this migration was written, on
purpose independent of ``tornchat.storage.models`` (peewee's migration convention):
later model changes get their own numbered migration.
"""

import datetime

from peewee import (
    BigAutoField,
    BigIntegerField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Conversation(Base):
        id = CharField(primary_key=True, max_length=40)
        participant_key = CharField(max_length=64, unique=True)
        created_at = DateTimeField(default=_now)
        updated_at = DateTimeField(default=_now)
        last_message_at = DateTimeField(default=_now)
        last_seq = BigIntegerField(default=0)

    class Participant(Base):
        id = CharField(primary_key=True, max_length=40)
        user_id = CharField(max_length=128, index=True)
        conversation = ForeignKeyField(Conversation, on_delete="CASCADE",
                                       column_name="conversation_id")
        joined_at = DateTimeField(default=_now)
        last_read_at = DateTimeField(default=_now)

        class Meta:
            indexes = ((("user_id", "conversation"), True),)

    class Message(Base):
        id = CharField(primary_key=True, max_length=40)
        conversation = ForeignKeyField(Conversation, on_delete="CASCADE",
                                       column_name="conversation_id")
        sender_id = CharField(max_length=128)
        content = TextField()
        created_at = DateTimeField(default=_now)
        seq = BigIntegerField()
        client_message_id = CharField(max_length=64, null=True)

        class Meta:
            indexes = (
                (("conversation", "created_at"), False),
                (("conversation", "seq"), True),
                (("sender_id", "client_message_id"), True),
            )

    class Outbox(Base):
        id = BigAutoField()
        message_id = CharField(max_length=40)
        conversation_id = CharField(max_length=40)
        dedupe_id = CharField(max_length=36)
        payload = TextField()
        created_at = DateTimeField(default=_now)
        sent_at = DateTimeField(null=True, index=True)
        attempts = IntegerField(default=0)

    db.create_tables([Conversation, Participant, Message, Outbox])


def down(migrator, db):
    for table in ("outbox", "message", "participant", "conversation"):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
