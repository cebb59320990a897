"""``tornchat events``: watch, drain and inspect the Kafka events
(``MessageSent``, ``ConversationRead``).

- ``tail`` is the example consumer a notification-service author can copy:
  a confluent-kafka ``Consumer`` that prints each event as one JSON line and
  drops redeliveries by ``dedupeId`` (delivery is at least once).
- ``drain`` publishes the outbox backlog once and exits: the way to send the
  events that piled up while ``KAFKA_BROKER`` was unset.
- ``status`` prints the backlog (unsent events, age of the oldest).

Thread rule: plain blocking commands, no IOLoop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator

import peewee as pw

from tornchat.config import Settings
from tornchat.errors import ConfigError, StartupError
from tornchat.events.outbox import OutboxStore
from tornchat.storage.database import shown_url, sqlite_path, startup_database
from tornchat.storage.schema import pending_migrations

_DEDUPE_MEMORY = 100_000


def add_parser(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register ``events`` and its subcommands through cli.py's ``add`` helper."""
    events = add("events", "watch, drain or inspect the Kafka events (MessageSent, "
                           "ConversationRead; docs/events.md)")
    commands = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        # also after the action; SUPPRESS keeps one given before it
        sub.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                         help="TOML settings file (default: $TORNCHAT_CONFIG)")
        return sub

    tail = action("tail", "print events from Kafka as JSON lines")
    tail.add_argument("--broker", help="host:port[,host:port] (default $KAFKA_BROKER)")
    tail.add_argument("--topic", help="topic (default $TORNCHAT_KAFKA_TOPIC or chat-events)")
    tail.add_argument("--from-beginning", action="store_true",
                      help="start at the oldest retained event instead of new ones")
    tail.add_argument("--group", help="consumer group: commit offsets and resume there "
                                      "next time (default: no group, nothing committed)")
    tail.add_argument("--count", type=int, metavar="N", help="exit after N events")
    tail.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="exit after this long (default: run until Ctrl-C)")
    tail.add_argument("--type", metavar="EVENT_TYPE", dest="event_type",
                      help="print only events of this eventType (MessageSent, "
                           "ConversationRead)")
    tail.add_argument("--keys", action="store_true",
                      help="prefix each line with the record key (conversationId) and a tab")

    drain = action("drain", "publish the outbox backlog once, then exit (needs KAFKA_BROKER)")
    drain.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                       help="give up after this long; the rest stays queued (default 60)")

    action("status", "print the outbox backlog (unsent events, age of the oldest) as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.events_command
    if command == "status":
        return _status(settings)
    if command == "drain":
        return _drain(settings, args.timeout)
    return _tail(args, settings)


@contextlib.contextmanager
def _migrated_database(settings: Settings) -> Iterator[pw.Database]:
    """The outbox's database, once it is there to read: it exists (a SQLite
    file is not created by looking) and is migrated; otherwise one line
    saying what to run."""
    url = settings.database_url
    path = sqlite_path(url)
    if path is not None and not os.path.exists(path):
        raise StartupError(f"no database at {path} yet (DATABASE_URL): run "
                           "`tornchat migrate` or start `tornchat serve` first")
    with startup_database(url) as database:
        pending = pending_migrations(database)
        if pending:
            raise StartupError(f"the schema of DATABASE_URL {shown_url(url)} is behind "
                               f"({', '.join(pending)} pending): run `tornchat migrate` first")
        yield database


def _status(settings: Settings) -> int:
    with _migrated_database(settings) as database:
        backlog = OutboxStore(database).backlog()
    print(json.dumps({"pending": backlog.size, "oldestAgeSeconds": round(backlog.oldest_age, 3)}))
    return 0


def _drain(settings: Settings, timeout: float) -> int:
    from tornchat.events.relay import build_relay

    relay = build_relay(settings)
    if relay is None:
        raise ConfigError("KAFKA_BROKER", "is needed to drain the outbox (host:port)")
    with _migrated_database(settings):
        pass  # checked only: the relay drains over its own connections
    left = relay.drain(timeout)
    print(json.dumps({"published": relay.published, "pending": left.size}))
    return 0 if left.size == 0 else 1


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    broker = args.broker or settings.kafka_broker
    if not broker:
        raise ConfigError("KAFKA_BROKER", "is needed to tail events (or pass --broker)")
    topic = args.topic or settings.kafka_topic
    consumer = Consumer({
        "bootstrap.servers": broker,
        "group.id": args.group or f"tornchat-tail-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": bool(args.group),
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
    })
    if args.group:
        consumer.subscribe([topic])
    else:  # no group: read every partition directly, no rebalance to wait for
        start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
    seen: OrderedDict[str, None] = OrderedDict()
    printed = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        while (args.count is None or printed < args.count) and (
                deadline is None or time.monotonic() < deadline):
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                print(f"tornchat events tail: {message.error()}", file=sys.stderr)
                continue
            value = (message.value() or b"").decode("utf-8")
            event = json.loads(value)
            dedupe_id = event.get("dedupeId", "")
            if dedupe_id in seen:
                continue  # a redelivery: same event, already handled
            if args.event_type and event.get("eventType") != args.event_type:
                continue
            seen[dedupe_id] = None
            if len(seen) > _DEDUPE_MEMORY:
                seen.popitem(last=False)
            key = (message.key() or b"").decode("utf-8")
            print(f"{key}\t{value}" if args.keys else value, flush=True)
            printed += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
