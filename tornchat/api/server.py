"""The server API for backends (PROTOCOL §15): post a message as any user,
end a user's sessions. For notification workers, bots and moderation tools
that hold no WebSocket.

On only when ``TORNCHAT_API_KEY`` is set; otherwise every path here answers
404, as if it did not exist. A request proves itself with ``X-API-Key``,
compared in constant time and never logged; a user's JWT gets 401 here, and
the key gets 401 on the user endpoints (they take only a bearer JWT). A post
goes through exactly the socket's send path (:meth:`ChatService.post_as`).
"""

from __future__ import annotations

import hmac

import tornado.web

from tornchat.api.base import ApiHandler
from tornchat.contract import protocol
from tornchat.errors import InvalidRequest, Unauthorized


class ServerApiHandler(ApiHandler):
    challenge = 'ApiKey header="X-API-Key"'

    def prepare(self) -> None:
        key = self.context.settings.api_key
        if not key:
            raise tornado.web.HTTPError(404, "No such endpoint")
        if self.request.method == "OPTIONS":
            return
        given = self.request.headers.get("X-API-Key", "")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise Unauthorized("Send the server API key in X-API-Key")


class ServerMessagesHandler(ServerApiHandler):
    """``POST``: store and deliver a message as ``senderId``."""

    async def post(self) -> None:
        body = self.json_body()
        sender_id = body.get("senderId")
        if not protocol.is_id(sender_id):
            raise InvalidRequest(f"'senderId' must be a user id of 1 to "
                                 f"{protocol.MAX_ID_LENGTH} printable characters")
        assert isinstance(sender_id, str)
        # the socket's send_message schema (an InvalidMessage answers 400 invalid_request)
        request = protocol.parse_client_frame({**body, "type": "send_message"},
                                              self.context.limits)
        assert isinstance(request, protocol.SendMessage)
        message = await self.context.service.post_as(sender_id, request)
        self.send_json({"message": message.to_wire()}, 200 if message.duplicate else 201)


class ServerDisconnectHandler(ServerApiHandler):
    """``POST``: close every live connection of a user, cluster-wide, with 4003."""

    async def post(self, user_id: str) -> None:
        if not protocol.is_id(user_id):
            raise InvalidRequest(f"A user id is 1 to {protocol.MAX_ID_LENGTH} printable "
                                 "characters")
        self.send_json({"closed": await self.context.service.disconnect(user_id)})
