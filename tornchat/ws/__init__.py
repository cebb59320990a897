"""The socket: the WebSocket handler, frame reading and writing, lean idle
connections, sessions, the heartbeat, authentication and rate limits.

Thread rule: IOLoop thread only. The handler sees the rest of the service
through a small typed context (:class:`tornchat.ws.context.SocketContext`),
never through the application object.
"""
