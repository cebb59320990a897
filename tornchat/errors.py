"""The one error tree of tornchat.

Every failure a client can see is a subclass of :class:`ChatError` and carries
the wire ``code`` it maps to (PROTOCOL section 4; the HTTP API maps the same
codes to statuses, :data:`tornchat.api.base.STATUS_OF`), or, for the auth
failures, the WebSocket close code the connection ends with (section 2). Handlers catch
``ChatError`` and serialise it; anything else is a bug and becomes
``internal_error`` without closing the socket.
"""

from __future__ import annotations


class TornchatError(Exception):
    """Base of every error raised on purpose by tornchat."""


class ConfigError(TornchatError):
    """A setting is missing or malformed; ``setting`` names the variable."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message

    def __repr__(self) -> str:
        return f"ConfigError(setting={self.setting!r}, message={self.message!r})"


class StartupError(TornchatError):
    """A command cannot start: the database named by ``DATABASE_URL`` cannot be
    opened, or the port cannot be bound. The settings may be well-formed, so
    this is not a :class:`ConfigError`; the command prints the one line and
    exits 1, and the cause (the driver's or the kernel's error) is kept as
    ``__cause__`` for anyone who wants the traceback."""


class ChatError(TornchatError):
    """A request could not be served; the connection stays open."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidJson(ChatError):
    code = "invalid_json"


class InvalidMessage(ChatError):
    code = "invalid_message"


class InvalidRequest(ChatError):
    """An HTTP request's parameters or body are malformed (status 400)."""

    code = "invalid_request"


class InvalidToken(ChatError):
    """A ``refresh`` with a token that is not valid (the old expiry stands)."""

    code = "invalid_token"


class Unauthorized(ChatError):
    """An HTTP request without a valid bearer token (status 401)."""

    code = "unauthorized"


class Forbidden(ChatError):
    code = "forbidden"


class NotFound(ChatError):
    code = "not_found"


class RateLimited(ChatError):
    code = "rate_limited"


class Unavailable(ChatError):
    """A dependency (storage) is down; nothing was stored, retrying is safe."""

    code = "unavailable"


class AlreadyAuthenticated(ChatError):
    code = "already_authenticated"


class AuthError(TornchatError):
    """Authentication failed; the server sends ``auth_error`` and closes."""

    close_code = 4001

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(close_code={self.close_code}, reason={self.reason!r})"


class DisconnectedByServer(AuthError):
    """The server API ended this user's sessions while this one authenticated."""

    close_code = 4003

    def __init__(self) -> None:
        super().__init__("Disconnected by server")


class TooManyConnections(AuthError):
    close_code = 4029

    def __init__(self) -> None:
        super().__init__("Too many connections")


class SlowConsumer(TornchatError):
    """A connection's unsent outbound bytes would pass ``TORNCHAT_MAX_OUTBOUND_BYTES``
    (PROTOCOL §14): it is closed with 4008."""

    close_code = 4008
