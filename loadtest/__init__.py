"""Load tests and benchmarks for tornchat.

Two tools, one payload convention (:mod:`loadtest.stamp`):

- ``locustfile.py``: Locust users speaking the tornchat protocol over
  websocket-client (gevent-friendly), for anyone who already runs Locust;
- ``bench.py`` (``python -m loadtest.bench``): a self-contained asyncio
  benchmark that starts tornchat, a python-socketio peer and a trivial server
  itself and measures them with open-loop load from several processes
  (``runner.py`` starts the systems, ``steps.py`` measures, ``summary.py``
  turns steps into numbers, ``report.py`` into a table and a plot).

Two narrower benchmarks, not tests: ``bus_bench.py`` (``python -m
loadtest.bus_bench``: the Redis bus modes) and ``relay_bench.py`` (``python -m
loadtest.relay_bench``: the outbox relay). Ports, services, launchers and
clients shared with the tests come from :mod:`harness`.
"""
