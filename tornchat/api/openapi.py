"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 document of the HTTP API.

Written by hand next to the handlers it describes, and kept true by
``tests/api/test_openapi.py``, which runs schemathesis against a live server:
every response of every documented operation must conform to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from tornchat import __version__
from tornchat.api.base import ApiContext, ApiHandler
from tornchat.api.conversations import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_LIST_LIMIT,
    MAX_HISTORY_LIMIT,
    MAX_LIST_LIMIT,
)
from tornchat.api.devtoken import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, MIN_TTL_SECONDS
from tornchat.auth import MAX_USER_ID_LENGTH
from tornchat.contract.protocol import MAX_ID_LENGTH, MAX_PRESENCE_USERS_PER_REQUEST, Limits

_SEQ: Mapping[str, Any] = MappingProxyType({"type": "integer", "minimum": 0})
_ID: Mapping[str, Any] = MappingProxyType(
    {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH})
_TIME: Mapping[str, Any] = MappingProxyType({
    "type": "string", "format": "date-time",
    "description": "ISO 8601 UTC with milliseconds, e.g. 2026-01-11T12:00:00.000Z"})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {400: "invalid_request: a parameter or the body is malformed",
               401: "unauthorized: no or an invalid credential (a bearer JWT; on "
                    "/api/v1/server, the X-API-Key)",
               403: "forbidden: the caller is not a participant",
               404: "not_found: no such conversation (on /api/v1/server: the server API "
                    "is off; on /api/v1/dev: production)",
               503: "unavailable: storage (or, for presence, Redis) is down; nothing "
                    "changed, retry later"}
    return {str(status): _json(_ref("Error"), meaning[status]) for status in statuses}


_CONVERSATION_ID: Mapping[str, Any] = MappingProxyType(
    {"name": "conversationId", "in": "path", "required": True, "schema": _ID})

def _schemas(limits: Limits) -> dict[str, Any]:
    return {
        "Error": {
            "type": "object", "required": ["code", "error"], "additionalProperties": False,
            "properties": {"code": {"type": "string", "enum": [
                "invalid_request", "unauthorized", "forbidden", "not_found", "rate_limited",
                "unavailable", "internal_error"]}, "error": {"type": "string"}}},
        "Message": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "conversationId", "senderId", "content", "createdAt", "seq"],
            "properties": {"id": {"type": "string"}, "conversationId": {"type": "string"},
                           "senderId": {"type": "string"}, "content": {"type": "string"},
                           "createdAt": _TIME, "seq": {"type": "integer", "minimum": 1}}},
        "Conversation": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "participants", "createdAt", "lastMessageAt", "lastSeq",
                         "lastReadSeq", "unreadCount", "lastMessage"],
            "properties": {
                "id": {"type": "string"},
                "participants": {"type": "array", "items": {"type": "string"},
                                 "description": "user ids, sorted"},
                "createdAt": _TIME, "lastMessageAt": _TIME, "lastSeq": _SEQ,
                "lastReadSeq": _SEQ, "unreadCount": _SEQ,
                "lastMessage": {"oneOf": [_ref("Message"), {"type": "null"}]}}},
        "ConversationList": {
            "type": "object", "additionalProperties": False,
            "required": ["conversations", "nextCursor"],
            "properties": {"conversations": {"type": "array", "items": _ref("Conversation")},
                           "nextCursor": {"type": ["string", "null"],
                                          "description": "opaque; null on the last page"}}},
        "MessagePage": {
            "type": "object", "additionalProperties": False,
            "required": ["messages", "hasMoreBefore", "hasMoreAfter", "lastSeq"],
            "properties": {"messages": {"type": "array", "items": _ref("Message"),
                                        "description": "ascending seq, contiguous"},
                           "hasMoreBefore": {"type": "boolean"},
                           "hasMoreAfter": {"type": "boolean"}, "lastSeq": _SEQ}},
        "OpenConversation": {
            "type": "object", "required": ["recipientIds"],
            "properties": {"recipientIds": {"type": "array", "minItems": 1,
                                            "maxItems": limits.max_recipients, "items": _ID}}},
        "MarkRead": {"type": "object", "required": ["seq"], "properties": {"seq": _SEQ}},
        "ServerMessage": {
            "type": "object", "required": ["senderId", "content"],
            "description": "exactly one of recipientIds or conversationId",
            "properties": {
                "senderId": _ID,
                "recipientIds": {"type": "array", "minItems": 1,
                                 "maxItems": limits.max_recipients, "items": _ID},
                "conversationId": _ID,
                "content": {"type": "string", "minLength": 1,
                            "maxLength": limits.max_message_length},
                "clientMessageId": {"type": "string", "minLength": 1, "maxLength": 64}}},
        "PostedMessage": {
            "type": "object", "additionalProperties": False, "required": ["message"],
            "properties": {"message": _ref("Message")}},
        "Disconnected": {
            "type": "object", "additionalProperties": False, "required": ["closed"],
            "properties": {"closed": {
                "type": "integer", "minimum": 0,
                "description": "live connections of the user when the disconnect was sent "
                               "(cluster-wide with Redis)"}}},
        "Presence": {
            "type": "object", "additionalProperties": False,
            "required": ["userId", "status", "lastSeenAt"],
            "properties": {
                "userId": {"type": "string"},
                "status": {"type": "string", "enum": ["online", "offline", "unknown"],
                           "description": "unknown: the user shares no conversation with "
                                          "the caller"},
                "lastSeenAt": {"oneOf": [_TIME, {"type": "null"}],
                               "description": "offline: when the last connection ended, "
                                              "if known; else null"}}},
        "PresenceList": {
            "type": "object", "additionalProperties": False, "required": ["presence"],
            "properties": {"presence": {"type": "array", "items": _ref("Presence"),
                                        "description": "in the order asked, repeats "
                                                       "dropped"}}},
        "DevTokenRequest": {
            "type": "object", "required": ["userId"],
            "properties": {
                "userId": {"type": "string", "minLength": 1, "maxLength": MAX_USER_ID_LENGTH},
                "ttlSeconds": {"type": "integer", "minimum": MIN_TTL_SECONDS,
                               "maximum": MAX_TTL_SECONDS, "default": DEFAULT_TTL_SECONDS}}},
        "DevToken": {
            "type": "object", "additionalProperties": False,
            "required": ["token", "userId", "expiresAt"],
            "properties": {"token": {"type": "string", "description": "an HS256 JWT"},
                           "userId": {"type": "string"}, "expiresAt": _TIME}},
        "ReadResult": {
            "type": "object", "additionalProperties": False,
            "required": ["lastReadSeq", "unreadCount"],
            "properties": {"lastReadSeq": _SEQ, "unreadCount": _SEQ}},
    }

def _paths() -> dict[str, Any]:
    return {
        "/api/v1/conversations": {
            "get": {
                "operationId": "listConversations",
                "summary": "The caller's conversations, newest lastMessageAt first (ties by id)",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {
                        "type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT,
                        "default": DEFAULT_LIST_LIMIT}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"},
                     "description": "nextCursor of the previous page"}],
                "responses": {"200": _json(_ref("ConversationList"), "a page"),
                              **_errors(400, 401, 503)}},
            "post": {
                "operationId": "openConversation",
                "summary": "Find or create the conversation of the caller and recipientIds",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("OpenConversation")}}},
                "responses": {"200": _json(_ref("Conversation"), "it existed"),
                              "201": _json(_ref("Conversation"), "created now"),
                              **_errors(400, 401, 503)}}},
        "/api/v1/conversations/{conversationId}": {
            "get": {
                "operationId": "getConversation", "summary": "One conversation of the caller's",
                "parameters": [_CONVERSATION_ID],
                "responses": {"200": _json(_ref("Conversation"), "the conversation"),
                              **_errors(400, 401, 403, 404, 503)}}},
        "/api/v1/conversations/{conversationId}/messages": {
            "get": {
                "operationId": "listMessages",
                "summary": "History: the newest limit, or just below beforeSeq, just above "
                           "afterSeq, or between both (from the low end); bounds exclusive",
                "parameters": [
                    _CONVERSATION_ID,
                    {"name": "limit", "in": "query", "schema": {
                        "type": "integer", "minimum": 1, "maximum": MAX_HISTORY_LIMIT,
                        "default": DEFAULT_HISTORY_LIMIT}},
                    {"name": "beforeSeq", "in": "query", "schema": _SEQ},
                    {"name": "afterSeq", "in": "query", "schema": _SEQ}],
                "responses": {"200": _json(_ref("MessagePage"), "a contiguous page"),
                              **_errors(400, 401, 403, 404, 503)}}},
        "/api/v1/conversations/{conversationId}/read": {
            "post": {
                "operationId": "markRead",
                "summary": "Move the caller's read position to max(old, min(seq, lastSeq)); "
                           "participants' sockets get a read frame if it moved",
                "parameters": [_CONVERSATION_ID],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("MarkRead")}}},
                "responses": {"200": _json(_ref("ReadResult"), "the position after the call"),
                              **_errors(400, 401, 403, 404, 503)}}},
        "/api/v1/presence": {
            "get": {
                "operationId": "getPresence",
                "summary": "Who of userIds is online; unknown for users who share no "
                           "conversation with the caller",
                "parameters": [{
                    "name": "userIds", "in": "query", "required": True,
                    "description": f"comma-separated user ids, 1 to "
                                   f"{MAX_PRESENCE_USERS_PER_REQUEST}",
                    "schema": {"type": "string", "minLength": 1}}],
                "responses": {"200": _json(_ref("PresenceList"), "one entry per user"),
                              **_errors(400, 401, 503)}}},
        "/api/v1/server/messages": {
        "post": {
            "operationId": "serverPostMessage", "security": [{"apiKey": []}],
            "summary": "Post a message as senderId: stored, evented and delivered like a "
                       "socket send, to every participant connection (the sender's too). "
                       "404 when TORNCHAT_API_KEY is unset",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("ServerMessage")}}},
            "responses": {"201": _json(_ref("PostedMessage"), "stored now"),
                          "200": _json(_ref("PostedMessage"),
                                       "a repeated clientMessageId: the original"),
                          **_errors(400, 401, 403, 404, 503)}}},
    "/api/v1/server/users/{userId}/disconnect": {
        "post": {
            "operationId": "serverDisconnectUser", "security": [{"apiKey": []}],
            "summary": "Close every live connection of the user, cluster-wide (4003). "
                       "404 when TORNCHAT_API_KEY is unset",
            "parameters": [{"name": "userId", "in": "path", "required": True,
                            "schema": _ID}],
            "responses": {"200": _json(_ref("Disconnected"), "how many were closed"),
                          **_errors(400, 401, 404)}}},
    "/api/v1/dev/token": {
        "post": {
            "operationId": "devToken", "security": [],
            "summary": "Development only (404 when TORNCHAT_ENV=production): a signed JWT for "
                       "any user id, for trying the service; the demo page signs in with it",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("DevTokenRequest")}}},
            "responses": {"200": _json(_ref("DevToken"), "the token"),
                          **_errors(400, 404)}}},
    "/api/v1/openapi.json": {
            "get": {
                "operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {
                    "application/json": {"schema": {"type": "object"}}}}}}},
    }


def document(limits: Limits | None = None) -> dict[str, Any]:
    """The document; ``limits`` (the server's settings) bound the request bodies."""
    limits = limits if limits is not None else Limits()
    return {
        "openapi": "3.1.0",
        "info": {"title": "tornchat HTTP API", "version": __version__,
                 "description": "Conversations, history, read positions and presence of a "
                                "tornchat server, and the server API for backends. Real-time "
                                "traffic is the WebSocket at /api/v1/chat. Besides what is "
                                "listed, every path answers another method with 405 and an "
                                "Allow header, and a failure of the server itself with 500 "
                                "and the code internal_error. Outside this document: "
                                "/health, /health/live, /metrics (Prometheus), /demo and "
                                "/client/tornchat.js (development)."},
        "paths": _paths(),
        "components": {"schemas": _schemas(limits), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
        "security": [{"bearer": []}],
    }


def encoded_document(limits: Limits | None = None) -> bytes:
    """:func:`document` as JSON (the shared fragments are read-only mappings)."""
    return orjson.dumps(document(limits), default=dict)


class OpenApiHandler(ApiHandler):
    """Serves the document, encoded once by the application; no authentication."""

    def initialize(self, context: ApiContext, body: bytes = b"") -> None:
        super().initialize(context)
        self._body = body

    def get(self) -> None:
        self.set_header("Cache-Control", "public, max-age=300")
        self.finish(self._body)
