"""The private Tornado attributes tornchat relies on are still there.

``ws.framereader``, ``ws.leanconn``, ``ws.framewriter`` and the handler reach
into Tornado (for the memory and CPU gains measured in docs/performance.md).
setup.py pins the Tornado range they were tested with; when an upgrade inside
or outside it removes one of them, this test fails and names the attribute,
instead of a connection quietly costing more or a frame being misread.
"""

from __future__ import annotations

import inspect

import pytest
import tornado.util
from tornado.httputil import HTTPHeaders
from tornado.iostream import IOStream
from tornado.tcpserver import TCPServer
from tornado.web import RequestHandler
from tornado.websocket import WebSocketHandler, WebSocketProtocol, WebSocketProtocol13

from harness.wsclient import authed

#: (owner, attribute, who relies on it)
CLASS_ATTRIBUTES = [
    (WebSocketProtocol13, "_receive_frame_loop", "framereader: replaced by callbacks"),
    (WebSocketProtocol13, "_handle_message", "framereader: dispatch of a whole message"),
    (WebSocketProtocol, "_abort", "framereader: ends a connection on a protocol error"),
    (WebSocketProtocol, "_run_callback", "framereader: on_message's awaitable"),
    (WebSocketHandler, "_detach_stream", "handler: overridden to skip seven attributes"),
    (WebSocketHandler, "on_ws_connection_close", "framereader: on_close exactly once"),
    (WebSocketHandler, "get_websocket_protocol", "handler: swaps in the lean protocol"),
    (RequestHandler, "detach", "handler: the stream without the planted attributes"),
    (IOStream, "writing", "framewriter: direct socket write only when nothing is queued"),
    (IOStream, "read_bytes", "framereader: partial reads"),
    (tornado.util, "_websocket_mask", "framereader: C-accelerated unmasking"),
    (TCPServer, "_handle_connection", "acceptgate: accepting again after a pause"),
]

#: attributes set per instance (checked on a live, authenticated connection)
PROTOCOL_ATTRIBUTES = ["stream", "client_terminated", "_decompressor",
                       "_fragmented_message_buffer", "_fragmented_message_opcode",
                       "close_code", "close_reason", "handler"]
HANDLER_ATTRIBUTES = ["_on_close_called", "_headers", "path_args", "path_kwargs",
                      "ws_connection", "request"]
STREAM_ATTRIBUTES = ["socket", "_write_futures", "_write_buffer", "io_loop"]


@pytest.mark.parametrize(("owner", "name", "why"), CLASS_ATTRIBUTES,
                         ids=[f"{getattr(o, '__name__', o)}.{n}" for o, n, _ in CLASS_ATTRIBUTES])
def test_the_tornado_class_attributes_tornchat_overrides_or_calls_exist(owner, name, why):
    assert hasattr(owner, name), (
        f"Tornado {tornado.version} has no {getattr(owner, '__name__', owner)}.{name} "
        f"({why}); see docs/performance.md before widening the pinned range")


def test_the_receive_loop_tornchat_replaces_is_still_a_coroutine():
    assert inspect.iscoroutinefunction(WebSocketProtocol13._receive_frame_loop), (
        "WebSocketProtocol13._receive_frame_loop is no longer async: "
        "ws.framereader.LeanWebSocketProtocol overrides it as one")


def test_http_headers_can_still_be_emptied_in_place():
    headers = HTTPHeaders({"Sec-WebSocket-Key": "x"})
    HTTPHeaders.__init__(headers)  # what ws.leanconn.forget_request_headers does
    assert dict(headers) == {}, "HTTPHeaders.__init__ no longer resets the object"


async def test_a_live_connection_has_every_instance_attribute_tornchat_touches(server):
    client = await authed(server.url, server.secret, "alice")
    (handler,) = server.app.registry.connections_of("alice")
    protocol = handler.ws_connection
    missing = [f"WebSocketProtocol13.{name}" for name in PROTOCOL_ATTRIBUTES
               if not hasattr(protocol, name)]
    missing += [f"WebSocketHandler.{name}" for name in HANDLER_ATTRIBUTES
                if not hasattr(handler, name)]
    stream = protocol.stream
    missing += [f"IOStream.{name}" for name in STREAM_ATTRIBUTES if not hasattr(stream, name)]
    write_buffer = getattr(stream, "_write_buffer", None)
    if not hasattr(write_buffer, "_buffers"):
        missing.append("IOStream._write_buffer._buffers")
    assert not missing, f"Tornado {tornado.version} lacks what tornchat relies on: {missing}"
    assert type(protocol).__name__ == "LeanWebSocketProtocol", "the lean reader is not in use"
    client.close()


def test_a_server_still_keeps_its_sockets_and_accept_handlers_by_descriptor(server):
    http_server = server.app._server
    assert set(http_server._sockets) == set(http_server._handlers), (
        "TCPServer no longer keeps _sockets and _handlers by fd: server.acceptgate pauses "
        "and resumes accepting through them")
    assert all(callable(remove) for remove in http_server._handlers.values())


async def test_an_http_server_holds_a_connection_until_its_upgrade_detaches_it(server):
    http_server = server.app._server
    assert isinstance(http_server._connections, set), (
        "HTTPServer no longer keeps _connections: server.acceptgate counts the "
        "connections in their HTTP phase by it")
    client = await authed(server.url, server.secret, "alice")
    assert not http_server._connections, "an upgraded connection is still held as HTTP"
    client.close()
