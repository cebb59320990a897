"""What every HTTP API handler shares: bearer authentication, one JSON error
shape, CORS, and request parsing that fails with a readable 400.

An error is always ``{"code": "<code>", "error": "<human message>"}``; the
status follows the code (:data:`STATUS_OF`), whatever raised it (a
:class:`~tornchat.errors.ChatError`, a bad token, an unknown path, a method
the path does not have). Browser origins listed in
``TORNCHAT_ALLOWED_ORIGINS`` get CORS headers, preflight included; other
origins get none. IOLoop thread only; every store call goes through the
service, which runs it on the executor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson
import tornado.web

from tornchat.auth import TokenVerifier
from tornchat.config import Settings
from tornchat.contract import protocol
from tornchat.errors import AuthError, ChatError, InvalidRequest, Unauthorized
from tornchat.service import ChatService

log = logging.getLogger(__name__)

STATUS_OF: Mapping[str, int] = MappingProxyType({
    "invalid_request": 400, "invalid_message": 400, "invalid_json": 400,
    "unauthorized": 401, "forbidden": 403, "not_found": 404, "rate_limited": 429,
    "unavailable": 503})
#: codes a 400 of any origin is reported as
_BAD_REQUEST_CODES = ("invalid_message", "invalid_json")
_TORNADO_CODES: Mapping[int, str] = MappingProxyType({
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "invalid_request", 429: "rate_limited", 503: "unavailable"})


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What an API handler may use of the process."""

    settings: Settings
    #: the frame bounds, the same object the socket checks against
    limits: protocol.Limits
    verifier: TokenVerifier
    service: ChatService

    def cors_allowed(self, origin: str) -> bool:
        allowed = self.settings.allowed_origins
        return "*" in allowed or origin.rstrip("/") in allowed


class ApiHandler(tornado.web.RequestHandler):
    """Base of the ``/api/v1`` handlers."""

    #: the ``WWW-Authenticate`` challenge of a 401: what credential to send
    challenge = 'Bearer realm="tornchat"'

    def initialize(self, context: ApiContext) -> None:
        self.context = context
        self._cors()

    # -- headers, CORS -----------------------------------------------------

    def set_default_headers(self) -> None:
        """Also after an error clears the headers (Tornado calls this from
        ``clear``, the first time before :meth:`initialize`)."""
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        if hasattr(self, "context"):
            self._cors()

    def _cors(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin is not None:
            self.set_header("Vary", "Origin")
            if self.context.cors_allowed(origin):
                self.set_header("Access-Control-Allow-Origin", origin)

    def options(self, *args: str) -> None:
        """A CORS preflight: allowed origins learn what they may send."""
        if "Access-Control-Allow-Origin" in self._headers:
            self.set_header("Access-Control-Allow-Methods", ", ".join(self.allowed_methods()))
            self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    # -- authentication --------------------------------------------------

    def user_id(self) -> str:
        """The caller, from ``Authorization: Bearer <JWT>`` (checked like ``auth``)."""
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Send Authorization: Bearer <JWT>")
        try:
            return self.context.verifier.verify(token.strip())
        except AuthError as exc:
            raise Unauthorized(exc.reason) from None

    # -- parsing -----------------------------------------------------------

    def int_argument(self, name: str, default: int | None, low: int, high: int | None = None
                     ) -> int | None:
        """A query argument that must be an integer in ``[low, high]``."""
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:  # no sign, space, 1e3
            raise InvalidRequest(f"'{name}' must be an integer {bound}")
        value = int(raw)
        if value < low or (high is not None and value > high):
            raise InvalidRequest(f"'{name}' must be an integer {bound}")
        return value

    def json_body(self) -> dict[str, Any]:
        try:
            data = orjson.loads(self.request.body or b"")
        except orjson.JSONDecodeError:
            raise InvalidRequest("The body must be a JSON object") from None
        if not isinstance(data, dict):
            raise InvalidRequest("The body must be a JSON object")
        return data

    def conversation_id(self, raw: str) -> str:
        if not protocol.is_id(raw):
            raise InvalidRequest(f"A conversation id is 1 to {protocol.MAX_ID_LENGTH} "
                                 "printable characters")
        return raw

    # -- answers -----------------------------------------------------------

    def send_json(self, body: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.finish(orjson.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every failure in the one error shape."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ChatError):
            code = "invalid_request" if exc.code in _BAD_REQUEST_CODES else exc.code
            status_code, message = STATUS_OF.get(code, 500), exc.message
        elif isinstance(exc, tornado.web.HTTPError):
            code = _TORNADO_CODES.get(status_code, "internal_error")
            message = exc.log_message or self._reason
        else:
            code, message = "internal_error", "Internal server error"
        self.clear_header("Content-Length")
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        elif status_code == 401:
            self.set_header("WWW-Authenticate", self.challenge)
        self.set_status(status_code)
        self.finish(orjson.dumps({"code": code, "error": message}))

    def allowed_methods(self) -> list[str]:
        return [method for method in ("GET", "POST")
                if getattr(type(self), method.lower()) is not getattr(
                    tornado.web.RequestHandler, method.lower())] + ["OPTIONS"]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Requests that failed on purpose are not errors of the server."""
        if isinstance(value, ChatError):
            if value.code == "unavailable":
                log.warning("request failed: %s", value.message,
                            extra={"path": self.request.path})
            return
        super().log_exception(typ, value, tb)


class NotFoundHandler(ApiHandler):
    """Any other path under ``/api/v1``: a JSON 404."""

    def prepare(self) -> None:
        if self.request.method != "OPTIONS":
            raise tornado.web.HTTPError(404, "No such endpoint")
