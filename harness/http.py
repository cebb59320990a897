"""An async client for the ``/api/v1`` HTTP API, on Tornado's own HTTP client.

Answers come back as :class:`Answer` (status, decoded JSON body, headers),
whatever the status: tests assert on error answers as much as on good ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httputil import HTTPHeaders

from tornchat.auth import mint_token


@dataclass
class Answer:
    status: int
    body: Any
    headers: HTTPHeaders


class ApiClient:
    def __init__(self, base_url: str, secret: str, user_id: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = mint_token(secret, user_id) if user_id is not None else None

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None, token: str | None = None
                   ) -> Answer:
        sent = dict(headers or {})
        bearer = token if token is not None else self.token
        if bearer is not None and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {bearer}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        elif method == "POST":
            data = b""
        request = HTTPRequest(self.base_url + path, method=method, headers=sent, body=data,
                              allow_nonstandard_methods=True, request_timeout=10)
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        text = response.body or b""
        return Answer(response.code, json.loads(text) if text else None, response.headers)

    async def get(self, path: str, **kwargs: Any) -> Answer:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        return await self.call("POST", path, body, **kwargs)
