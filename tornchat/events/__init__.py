"""Kafka events: the transactional outbox the store writes into, the relay
that publishes it, the Kafka producer, and the ``tornchat events`` commands.

Thread rule: the relay runs on a thread of its own; chat never waits for it.
"""
