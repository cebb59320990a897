"""``GET /api/v1/presence?userIds=u2,u3``: presence without a socket (PROTOCOL §13).

The same rules as a ``presence_subscribe``: at most 100 users, and those who
share no conversation with the caller are ``unknown``. Nothing is watched.
"""

from __future__ import annotations

from tornchat.api.base import ApiHandler
from tornchat.contract import protocol
from tornchat.errors import InvalidRequest


class PresenceHandler(ApiHandler):
    async def get(self) -> None:
        user_id = self.user_id()
        raw = self.get_query_argument("userIds", None)
        if raw is None:
            raise InvalidRequest("'userIds' is required: a comma-separated list of user ids")
        user_ids = protocol.parse_user_ids(raw.split(","))
        statuses = await self.context.service.presence_of(user_id, user_ids)
        self.send_json({"presence": [status.to_wire() for status in statuses]})
