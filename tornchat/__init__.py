"""tornchat: a real-time WebSocket chat service on Tornado.

The package is split one concern per module; ``tornchat.app.ChatApplication``
owns every piece of runtime state, so nothing here is a mutable global.
"""

__version__ = "0.1.0"
