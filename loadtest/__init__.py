"""Load tests and benchmarks for tornchat.

Two tools, one payload convention (:mod:`loadtest.stamp`):

- ``locustfile.py``: Locust users speaking the tornchat protocol over
  websocket-client (gevent-friendly), for anyone who already runs Locust;
- ``bench.py`` (``python -m loadtest.bench``): a self-contained asyncio
  benchmark that starts tornchat, a python-socketio peer and a trivial server
  itself and measures them with open-loop load from several processes.
"""
