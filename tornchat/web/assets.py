"""Handlers for the files in ``tornchat/web/static``.

``tornchat.js`` there is a symbolic link to ``clients/js/tornchat.js``, the one
copy of the client library (npm publishes that folder); building the package
copies the file itself into the wheel, so an installed server serves exactly
the library its source tree ships. The demo page is on when
``TORNCHAT_DEMO=1``, or by default in development; otherwise its paths do not
exist (404).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tornado.web

STATIC_DIR = Path(__file__).with_name("static")
CLIENT_FILE = "tornchat.js"
DEMO_PAGE = "demo.html"
#: where the client file really lives: clients/js in a source tree, here once installed
_CLIENT_HOME = (STATIC_DIR / CLIENT_FILE).resolve().parent

#: the demo loads nothing from elsewhere and runs no inline script
_DEMO_POLICY = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                "style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'")


class AssetHandler(tornado.web.StaticFileHandler):
    """A static file that a browser revalidates (by ETag) on every load, so a
    restarted server with a new client version is picked up at once. Origins
    in ``TORNCHAT_ALLOWED_ORIGINS`` may load it from their own pages (a module
    script is fetched in CORS mode)."""

    def initialize(self, path: str, default_filename: str | None = None,
                   allowed_symlink_directory: str | list[str] | None = None,
                   allowed_origins: tuple[str, ...] = ()) -> None:
        super().initialize(path, default_filename, allowed_symlink_directory)
        self._allowed_origins = allowed_origins

    def parse_url_path(self, url_path: str) -> str:
        return url_path or DEMO_PAGE

    def set_extra_headers(self, path: str) -> None:
        origin = self.request.headers.get("Origin")
        if origin is not None:
            self.set_header("Vary", "Origin")
            if "*" in self._allowed_origins or origin.rstrip("/") in self._allowed_origins:
                self.set_header("Access-Control-Allow-Origin", origin)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", _DEMO_POLICY)
        self.set_header("Referrer-Policy", "no-referrer")


Route = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]


def routes(demo: bool, allowed_origins: tuple[str, ...] = ()) -> list[Route]:
    """The client library always; the demo page (and ``/`` leading to it) if ``demo``."""
    files: dict[str, Any] = {"path": str(STATIC_DIR),
                             "allowed_symlink_directory": [str(STATIC_DIR), str(_CLIENT_HOME)],
                             "allowed_origins": allowed_origins}
    table: list[Route] = [
        (r"/client/(tornchat\.js)", AssetHandler, files)]
    if demo:
        table += [(r"/demo/?()", AssetHandler, files),
                  (r"/demo/(demo\.css|demo\.js)", AssetHandler, files),
                  (r"/", tornado.web.RedirectHandler, {"url": "/demo", "permanent": False})]
    return table
