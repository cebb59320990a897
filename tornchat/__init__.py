"""tornchat: a real-time WebSocket chat service on Tornado.

The tree follows a message on its way from one socket to another; each
sub-package is one stage, and imports only run downwards (an import-linter
contract in the test command checks it):

- :mod:`tornchat.server`: the application object, wiring, HTTP handlers,
  process lifecycle and worker supervision;
- :mod:`tornchat.ws`: the socket (handler, frame reading and writing, lean
  idle connections, sessions, heartbeat, sync's delivery log, rate limits);
- :mod:`tornchat.api`: the HTTP API for users and its OpenAPI document;
- :mod:`tornchat.service`: the chat rules, store then publish then
  acknowledge, in one place;
- :mod:`tornchat.events`: the Kafka outbox relay and its CLI;
- :mod:`tornchat.fanout`: the bus seam and its backends, the registry of live
  connections, ordered delivery, connection slots;
- :mod:`tornchat.storage`: the repository, one module per SQL dialect, the
  group-commit writer, models and migrations;
- :mod:`tornchat.contract`: what goes over the wire and into Kafka, pure;
- :mod:`tornchat.config`, :mod:`tornchat.errors`, :mod:`tornchat.metrics`,
  :mod:`tornchat.backoff`, :mod:`tornchat.auth`: what every stage shares.

``tornchat.server.app.ChatApplication`` owns every piece of runtime state of
a process, so nothing here is a mutable global.
"""

__version__ = "0.1.0"
