"""What the tests, the load tests and the benchmarks need to run tornchat for real.

One home for each helper, imported by ``tests/``, ``loadtest/`` and the
benchmarks in ``loadtest/`` alike:

- :mod:`harness.ports`: free ports, "is it listening?", ``wait_until``;
- :mod:`harness.services`: the machine's PostgreSQL and Redis (fail in CI,
  skip elsewhere), a throwaway database, a migrated one;
- :mod:`harness.redis_server`: a private ``redis-server`` to kill and restart;
- :mod:`harness.kafka`: a private Kafka-protocol broker (Tansu);
- :mod:`harness.server`: a real ``tornchat serve`` subprocess;
- :mod:`harness.cluster`: instances of ``serve --processes N`` and their workers;
- :mod:`harness.wsclient`: the async WebSocket client of the tests;
- :mod:`harness.rawws`: WebSocket clients on a raw socket (a silent one, a
  cheap asyncio one for load generation).

pytest fixtures stay in the ``conftest.py`` files; nothing here needs pytest
to be imported (it is imported only to fail or skip a test).
"""
