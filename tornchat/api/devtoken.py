"""``POST /api/v1/dev/token``: a signed JWT for any user id, for trying the
service (the demo page signs in with it).

Development only: with ``TORNCHAT_ENV=production`` the path answers 404, as if
it did not exist. In development anyone who can reach the server can mint a
token for anyone; that is the point of the mode, and the server warns about
it at start.
"""

from __future__ import annotations

import tornado.web

from tornchat.api.base import ApiHandler
from tornchat.auth import is_valid_user_id, mint_token
from tornchat.contract.timefmt import iso_from_ms
from tornchat.errors import InvalidRequest

DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 86400
MIN_TTL_SECONDS = 10


class DevTokenHandler(ApiHandler):
    def prepare(self) -> None:
        if self.context.settings.is_production:
            raise tornado.web.HTTPError(404, "No such endpoint")

    def post(self) -> None:
        body = self.json_body()
        user_id = body.get("userId")
        if not isinstance(user_id, str) or not is_valid_user_id(user_id):
            raise InvalidRequest("'userId' must be 1 to 128 printable characters")
        ttl = body.get("ttlSeconds", DEFAULT_TTL_SECONDS)
        if (isinstance(ttl, bool) or not isinstance(ttl, int)
                or not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS):
            raise InvalidRequest(f"'ttlSeconds' must be an integer from {MIN_TTL_SECONDS} "
                                 f"to {MAX_TTL_SECONDS}")
        token = mint_token(self.context.settings.access_token_secret, user_id, ttl)
        expires_at = self.context.verifier.identify(token).expires_at
        self.send_json({"token": token, "userId": user_id,
                        "expiresAt": iso_from_ms(int(expires_at * 1000))})
