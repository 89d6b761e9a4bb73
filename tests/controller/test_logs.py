"""The operator's log formats: structured fields in text and in JSON lines."""

from __future__ import annotations

import json
import logging

from hafence.controller.logs import JsonFormatter, TextFormatter, fields


def record(**values: object) -> logging.LogRecord:
    rec = logging.LogRecord("hafence.x", logging.INFO, __file__, 1, "fence %s", ("off",), None)
    for k, v in fields(**values).items():
        setattr(rec, k, v)
    return rec


def test_json_lines_carry_the_step_fields() -> None:
    line = JsonFormatter().format(record(host="h1", outage="h1-1", agent=None, duration=0.5))
    body = json.loads(line)
    assert body["message"] == "fence off" and body["level"] == "info"
    assert body["host"] == "h1" and body["outage"] == "h1-1" and body["duration"] == 0.5
    assert "agent" not in body  # None fields are dropped


def test_text_appends_key_values() -> None:
    line = TextFormatter().format(record(host="h1", result="error", message="no route"))
    assert line.endswith('fence off host=h1 result=error message="no route"')
