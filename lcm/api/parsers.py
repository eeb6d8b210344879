"""Limits on request bodies (SPEC §12), for the REST API and the CloudEvents webhook alike.

A body over `DATA_UPLOAD_MAX_MEMORY_SIZE` answers 413; JSON nested deeper than `MAX_JSON_DEPTH`
answers 400. Without them a deep document fails in the decoder (RecursionError) or later, once
stored, in whatever reads it back: a 500 either way.
"""

import codecs
import json

from django.conf import settings
from rest_framework import exceptions, parsers
from rest_framework.utils.json import strict_constant

# Deeper than any body LCM takes (a session's devices are 2 levels, a CloudEvent's data a handful).
MAX_JSON_DEPTH = 64


class RequestTooLarge(exceptions.APIException):
    """413: the body is larger than LCM accepts."""

    status_code = 413
    default_code = "request_too_large"

    def __init__(self, limit: int | None = None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE if limit is None else limit
        super().__init__(f"The request body is larger than {limit} bytes.")


class JsonTooDeep(ValueError):
    """The JSON document nests arrays and objects deeper than `MAX_JSON_DEPTH`."""

    def __init__(self):
        super().__init__(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def json_depth(value) -> int:
    """How deep arrays and objects nest in a decoded document (a scalar is 0), without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break  # deep enough to refuse: no need to walk the rest
        pending.extend((child, depth + 1) for child in children)
    return deepest


def load_json(text, **kwargs):
    """`json.loads`, refusing documents nested deeper than `MAX_JSON_DEPTH` (JsonTooDeep, a ValueError)."""
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise JsonTooDeep() from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise JsonTooDeep()
    return value


class LimitedJSONParser(parsers.JSONParser):
    """DRF's JSONParser with the limits above: 413 for a body too large, 400 for JSON too deep."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise RequestTooLarge(limit)
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(raw, encoding)
            parse_constant = strict_constant if self.strict else None  # NaN and Infinity are not JSON
            return load_json(text, parse_constant=parse_constant)
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
