"""Structured logging: a request id on every record, JSON lines when `LCM_LOG_FORMAT=json`."""

import json
import logging
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("lcm_request_id", default="-")

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Stamps the current request id (or `-`) on each record."""

    def filter(self, record):
        record.request_id = request_id_var.get()
        return True


class ExpectedClientErrorFilter(logging.Filter):
    """On `django.request`: an expected 4xx answer (403, 404, 409…) stays one WARNING line, without the
    traceback Django attaches to a refused permission or a missing page; 5xx keep theirs."""

    def filter(self, record):
        if getattr(record, "status_code", 500) < 500:
            record.exc_info = None
            record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any `extra` fields."""

    def format(self, record):
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
