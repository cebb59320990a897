"""The process: the application object that owns the runtime state, the
production wiring, the HTTP handlers (health, metrics), start-up and drain,
the worker supervisor and logging.
"""
