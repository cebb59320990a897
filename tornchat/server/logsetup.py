"""Logs on stderr: JSON for machines, one readable line for a person.

JSON (python-json-logger, one object per line) is what production collects;
when stderr is a terminal, or with ``TORNCHAT_LOG_FORMAT=text``, each event
is one line a person can read, its ids appended as ``key=value``. Call sites
pass ids through ``extra`` (``connectionId``, ``userId``, ``conversationId``);
tokens and message content are never logged at info.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

#: what every LogRecord has: anything else on a record came through ``extra``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class TextFormatter(logging.Formatter):
    """``2026-12-01 09:30:35.596 INFO  tornchat.ws.handler  connection closed
    connectionId=conn_… userId=alice``, a traceback (if any) below."""

    def __init__(self) -> None:
        super().__init__()
        self.converter = time.gmtime  # UTC, like the JSON logs

    def format(self, record: logging.LogRecord) -> str:
        moment = self.formatTime(record, "%Y-%m-%d %H:%M:%S")
        extras = " ".join(f"{key}={value}" for key, value in vars(record).items()
                          if key not in _STANDARD and not key.startswith("_"))
        line = (f"{moment}.{int(record.msecs):03d} {record.levelname:<7} {record.name}  "
                f"{record.getMessage()}{'  ' + extras if extras else ''}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info", log_format: str = "auto",
                      stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    text = log_format == "text" or (log_format == "auto" and stream.isatty())
    handler.setFormatter(TextFormatter() if text else JsonFormatter(
        "{levelname}{name}{message}{process}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601 UTC
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
