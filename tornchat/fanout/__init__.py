"""How a stored message reaches every connection of its recipients: the bus
seam and its in-memory and Redis backends, the registry of this process's
connections, ordered dispatch, and the per-user connection slots.

Thread rule: IOLoop thread, except the Redis listener thread, which hands
everything over with ``IOLoop.add_callback``.
"""
