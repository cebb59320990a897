"""What the server serves to browsers: the JavaScript client at
``/client/tornchat.js`` (always, the very file clients/js publishes) and the
demo page at ``/demo`` (on in development or with ``TORNCHAT_DEMO=1``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from tornchat.config import load_settings
from tornchat.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js" / "tornchat.js"


async def fetch(server, path: str, **kwargs):
    return await AsyncHTTPClient().fetch(server.http_url + path, raise_error=False,
                                         follow_redirects=False, **kwargs)


async def test_the_client_library_is_served_byte_for_byte(server):
    answer = await fetch(server, "/client/tornchat.js")
    assert answer.code == 200
    assert answer.body == CLIENT.read_bytes()
    assert answer.headers["Content-Type"].startswith("text/javascript")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    again = await fetch(server, "/client/tornchat.js",
                        headers={"If-None-Match": answer.headers["Etag"]})
    assert again.code == 304  # browsers revalidate cheaply (Cache-Control: no-cache)


async def test_allowed_origins_may_import_the_client_from_their_pages(io_loop, start_server):
    chat = await start_server(allowed_origins=("https://app.example",))
    allowed = await fetch(chat, "/client/tornchat.js", headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = await fetch(chat, "/client/tornchat.js", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_in_development_the_demo_page_and_its_files_are_served(server):
    page = await fetch(server, "/demo")
    assert page.code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b"/client/tornchat.js" in page.body or b"/demo/demo.js" in page.body
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for path in ("/demo/", "/demo/demo.css", "/demo/demo.js"):
        assert (await fetch(server, path)).code == 200, path
    for path in ("/demo/other.js", "/demodemo.js"):
        assert (await fetch(server, path)).code == 404, path
    root = await fetch(server, "/")
    assert root.code == 302 and root.headers["Location"] == "/demo"


async def test_in_production_the_demo_is_off_unless_asked_for(io_loop, start_server):
    production = await start_server(env="production")
    assert (await fetch(production, "/demo")).code == 404
    assert (await fetch(production, "/")).code == 404
    assert (await fetch(production, "/client/tornchat.js")).code == 200
    asked = await start_server(env="production", demo="1")
    assert (await fetch(asked, "/demo")).code == 200
    off = await start_server(demo="0")
    assert (await fetch(off, "/demo")).code == 404


def test_tornchat_demo_takes_1_0_or_auto():
    assert load_settings(environ={}).demo_enabled
    assert not load_settings(environ={"TORNCHAT_ENV": "production",
                                      "ACCESS_TOKEN_SECRET": "s" * 32}).demo_enabled
    assert not load_settings(environ={"TORNCHAT_DEMO": "0"}).demo_enabled
    with pytest.raises(ConfigError, match="TORNCHAT_DEMO"):
        load_settings(environ={"TORNCHAT_DEMO": "yes"})


@pytest.mark.slow
def test_the_built_package_carries_the_client_file_itself(tmp_path):
    """The static folder links to clients/js/tornchat.js; a wheel must hold the content.
    Built from a copy of the tree, so the build leaves nothing in the checkout."""
    source = tmp_path / "src"
    for name in ("tornchat", "loadtest", "harness"):
        shutil.copytree(ROOT / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md", "clients/js/tornchat.js"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(source)], check=True, timeout=300)
    wheel = next(tmp_path.glob("tornchat-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("tornchat/web/static/tornchat.js") == CLIENT.read_bytes()
        names = set(archive.namelist())
    assert {"tornchat/web/static/demo.html", "tornchat/web/static/demo.css",
            "tornchat/web/static/demo.js"} <= names
