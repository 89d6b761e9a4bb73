"""The operator's log: text for people, or one JSON object per line for a log pipeline.

Structured fields travel in a record's ``extra`` under the key ``fields`` (a mapping),
so a step line is ``log.info("fence step ...", extra=fields(host=..., result=...))``:
the text format appends them as ``key=value``, the JSON format as members of the object.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any

NOISY = ("kopf", "aiohttp.access", "urllib3")


def fields(**values: Any) -> dict[str, Mapping[str, Any]]:
    """``extra=`` for a log call: the structured fields of one line (None dropped)."""
    return {"fields": {k: v for k, v in values.items() if v is not None}}


def _fields_of(record: logging.LogRecord) -> Mapping[str, Any]:
    value = getattr(record, "fields", None)
    return value if isinstance(value, Mapping) else {}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _fields_of(record)
        if extra:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in _fields_of(record).items():
            body.setdefault(k, v)
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


def configure(level: str, fmt: str) -> None:
    """Root logging for the operator process: ``fmt`` is "text" or "json"."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
