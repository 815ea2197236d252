"""What the long-running commands say on stdout: readable text, or JSON lines on request.

Hospital IT and operators run `fedehr site start` and `fedehr server start`
under systemd or in containers, where a log shipper (journald, Fluent Bit,
Loki) reads stdout. `fedehr --log-format json ...` (or FEDEHR_LOG_FORMAT=json
in the service's environment file) turns every line into one JSON object with
time, level, logger and message, so nobody has to write parsing rules. The
choice travels to child processes through the environment variable.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import sys

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from fedehr.shared.errors import ConfigError

ENV = "FEDEHR_LOG_FORMAT"
FORMATS = ("text", "json")


def log_format() -> str:
    """The format asked for (default text); a bad value is a configuration error."""
    value = os.environ.get(ENV, "text").strip().lower() or "text"
    if value not in FORMATS:
        raise ConfigError(f"{ENV}={value!r} is not a log format", where=ENV,
                          fix=f"use one of {', '.join(FORMATS)}")
    return value


def set_log_format(value: str) -> None:
    os.environ[ENV] = value
    log_format()  # validate now, not at the first log line


class JsonFormatter(logging.Formatter):
    """One JSON object per record; fields given as ``extra={"fields": {...}}`` are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
                "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def json_handler(stream=None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    return handler


class DaemonConsole:
    """A daemon's voice: rich markup on stdout in text mode, a JSON line per message in json.

    The format is read at each message (cheap), so a module-level instance
    follows a `--log-format` given after the module was imported. Anything rich
    can print (a table, say) becomes its plain-text rendering in the JSON line.
    """

    def __init__(self, logger: str, console: Console | None = None):
        self.console = console or Console(width=None if sys.stdout.isatty() else 140)
        self.log = logging.getLogger(logger)

    def print(self, message, *, level: int = logging.INFO, **fields) -> None:
        if log_format() != "json":
            self.console.print(message)
            return
        if not any(isinstance(h.formatter, JsonFormatter) for h in self.log.handlers):
            self.log.addHandler(json_handler())
            self.log.setLevel(logging.INFO)
            self.log.propagate = False
        self.log.log(level, _plain(message), extra={"fields": fields})

    def warn(self, message: str, **fields) -> None:
        """`message` is plain text (it may quote paths and values): never read as markup."""
        if log_format() == "json":
            self.print(escape(message), level=logging.WARNING, **fields)
        else:
            self.console.print(f"[yellow]{escape(message)}[/]")


def _plain(message) -> str:
    if isinstance(message, str):
        return Text.from_markup(message).plain
    buffer = io.StringIO()
    Console(file=buffer, width=140, color_system=None).print(message)
    return buffer.getvalue().rstrip()


def error_line(message: str, **fields) -> str:
    """A user error as one JSON line (the CLI's json mode writes it to stderr)."""
    return json.dumps({"time": dt.datetime.now(dt.UTC).isoformat(), "level": "error",
                       "logger": "fedehr", "message": message, **fields}, default=str)
