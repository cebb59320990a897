"""JWT verification, and dev-token minting.

One verifier serves both doors: the socket's ``auth`` frame and the HTTP
API's ``Authorization: Bearer`` header, so a token means the same on both.

Only HS256 is accepted and ``exp`` is required: the algorithm list is fixed
here and never read from the token, so ``none`` and RS/HS confusion attacks
fail. Tokens are never logged; errors carry a short reason only.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jwt

from tornchat.errors import AuthError

ALGORITHM = "HS256"
USER_ID_CLAIMS = ("sub", "userId", "id")
MAX_USER_ID_LENGTH = 128
MAX_EXP = 253402300799  # 9999-12-31T23:59:59Z: what ISO 8601 timestamps can say


class Identity(NamedTuple):
    """Who a valid token names, and until when (its ``exp``, epoch seconds)."""

    user_id: str
    expires_at: float


class TokenVerifier:
    """Turns a bearer token into a user id or raises :class:`AuthError`."""

    def __init__(self, secret: str, leeway_seconds: float = 0.0) -> None:
        self._secret = secret
        self._leeway = leeway_seconds

    def verify(self, token: object) -> str:
        return self.identify(token).user_id

    def identify(self, token: object) -> Identity:
        if not isinstance(token, str) or not token:
            raise AuthError("Invalid token")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                # ``exp`` is required and checked; claims the contract does not
                # use are not judged (an ``aud`` for another service, a numeric
                # ``sub`` beside a string ``userId``, an ``iat`` a little ahead).
                options={"require": ["exp"], "verify_aud": False, "verify_sub": False,
                         "verify_iat": False, "verify_jti": False},
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("Token expired") from None
        except jwt.InvalidTokenError:
            raise AuthError("Invalid token") from None
        expires_at = claims["exp"]
        if (isinstance(expires_at, bool) or not isinstance(expires_at, int | float)
                or not 0 < expires_at <= MAX_EXP):
            raise AuthError("Invalid token")  # PyJWT takes any number, even year 300,000
        return Identity(user_id_from_claims(claims), float(expires_at))


def is_valid_user_id(value: str) -> bool:
    """At most 128 characters, no control characters (they could forge keys)."""
    return 0 < len(value) <= MAX_USER_ID_LENGTH and value.isprintable()


def user_id_from_claims(claims: dict[str, Any]) -> str:
    """The first non-empty string among ``sub``, ``userId``, ``id``."""
    for claim in USER_ID_CLAIMS:
        value = claims.get(claim)
        if isinstance(value, str) and value:
            if not is_valid_user_id(value):
                raise AuthError("Invalid token")
            return value
    raise AuthError("Token has no user id")


def mint_token(secret: str, user_id: str, ttl_seconds: int = 3600) -> str:
    """An HS256 token for ``user_id`` expiring in ``ttl_seconds`` (dev and tests)."""
    now = int(time.time())
    return jwt.encode({"sub": user_id, "iat": now, "exp": now + ttl_seconds}, secret, ALGORITHM)
