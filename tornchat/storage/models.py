"""The peewee models: the seed's schema plus what the contract needs.

Models are built per database by :func:`define_models` instead of being bound
to a module-level proxy, so two stores (SQLite and PostgreSQL in one test run,
say) never share mutable state. Additions to the seed's schema:

- ``conversation.participant_key``: a unique digest of the exact participant
  set, which makes find-or-create by ``recipientIds`` race-free;
- ``conversation.last_seq`` and ``message.seq``: gap-free per-conversation
  order, unique per conversation;
- ``message.client_message_id``: unique per sender, for idempotent sends;
- ``participant.last_read_seq``: the read position (contract version 2),
  beside the seed's ``last_read_at``;
- ``outbox``: the Kafka events (``MessageSent``, ``ConversationRead``),
  written in the transaction of what they describe.

All timestamps are naive UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee as pw

from tornchat.contract.timefmt import utc_now_ms


@dataclass(frozen=True)
class Models:
    """The model classes of one database. Typed ``Any``: peewee builds the
    field attributes at class creation, which a type checker cannot follow."""

    Conversation: Any
    Participant: Any
    Message: Any
    Outbox: Any

    @property
    def all(self) -> list[type[pw.Model]]:
        return [self.Conversation, self.Participant, self.Message, self.Outbox]


def define_models(database: pw.Database) -> Models:
    """Model classes bound to ``database``; call once per store."""

    class Base(pw.Model):
        class Meta:
            legacy_table_names = False

    class Conversation(Base):
        id = pw.CharField(primary_key=True, max_length=40)
        participant_key = pw.CharField(max_length=64, unique=True)
        created_at = pw.DateTimeField(default=utc_now_ms)
        updated_at = pw.DateTimeField(default=utc_now_ms)
        last_message_at = pw.DateTimeField(default=utc_now_ms)
        last_seq = pw.BigIntegerField(default=0)

    class Participant(Base):
        id = pw.CharField(primary_key=True, max_length=40)
        user_id = pw.CharField(max_length=128)  # led by the unique (user_id, conversation)
        conversation = pw.ForeignKeyField(Conversation, on_delete="CASCADE",
                                          column_name="conversation_id")
        joined_at = pw.DateTimeField(default=utc_now_ms)
        last_read_at = pw.DateTimeField(default=utc_now_ms)
        last_read_seq = pw.BigIntegerField(default=0)

        class Meta:
            indexes = ((("user_id", "conversation"), True),)

    class Message(Base):
        id = pw.CharField(primary_key=True, max_length=40)
        # (conversation, seq) below leads with the column: no index of its own
        conversation = pw.ForeignKeyField(Conversation, on_delete="CASCADE",
                                          column_name="conversation_id", index=False)
        sender_id = pw.CharField(max_length=128)
        content = pw.TextField()
        created_at = pw.DateTimeField(default=utc_now_ms)
        seq = pw.BigIntegerField()
        client_message_id = pw.CharField(max_length=64, null=True)

        class Meta:
            indexes = (
                (("conversation", "seq"), True),
                (("sender_id", "client_message_id"), True),
            )

    class Outbox(Base):
        id = pw.BigAutoField()
        message_id = pw.CharField(max_length=40)
        conversation_id = pw.CharField(max_length=40)
        dedupe_id = pw.CharField(max_length=36)
        payload = pw.TextField()
        created_at = pw.DateTimeField(default=utc_now_ms)
        sent_at = pw.DateTimeField(null=True, index=True)
        attempts = pw.IntegerField(default=0)

    for model in (Conversation, Participant, Message, Outbox):
        model.bind(database)
    return Models(Conversation, Participant, Message, Outbox)
