"""Contract checking: validate requests recorded by a simulator (and its responses) against an official
OpenAPI document with openapi-core.

The upstream CML and Grading Engine documents each carry one key strict validators reject
(EXTERNAL-SYSTEMS.md): they are dropped in memory before building the validator.
"""

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl

from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPECS = Path(__file__).resolve().parent.parent.parent / "shared" / "specs"


def _lenient(spec: dict) -> dict:
    """Drop the two known defects (an `examples` key on a response, a `tokenUrl` on an implicit flow)."""
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                if isinstance(response, dict):
                    response.pop("examples", None)
    for scheme in spec.get("components", {}).get("securitySchemes", {}).values():
        implicit = scheme.get("flows", {}).get("implicit") if isinstance(scheme, dict) else None
        if isinstance(implicit, dict):
            implicit.pop("tokenUrl", None)
    return spec


@cache
def openapi(filename: str, server_url: str | None = None) -> OpenAPI:
    """An openapi-core validator for a spec file in ../shared/specs (optionally with another server URL)."""
    spec = _lenient(json.loads((SPECS / filename).read_text()))
    if server_url is not None:
        spec["servers"] = [{"url": server_url}]
    return OpenAPI.from_dict(spec)


@dataclass
class RecordedRequest:
    """A simulator-recorded request in the shape openapi-core reads."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters = field(default_factory=RequestParameters)

    @classmethod
    def from_record(cls, record: dict, host_url: str) -> "RecordedRequest":
        headers = Headers(list(record.get("headers", {}).items()))
        body = record.get("body") or ""
        return cls(
            host_url=host_url,
            path=record["path"],
            method=record["method"].lower(),
            body=body.encode() if body else None,
            content_type=(record.get("content_type") or "application/json").lower(),
            parameters=RequestParameters(
                query=ImmutableMultiDict(parse_qsl(record.get("query", ""), keep_blank_values=True)),
                header=headers,
                cookie=ImmutableMultiDict(),
            ),
        )


@dataclass
class RecordedResponse:
    status_code: int
    content_type: str
    data: bytes | None
    headers: Headers = field(default_factory=Headers)

    @classmethod
    def from_record(cls, record: dict) -> "RecordedResponse":
        body = record.get("response")
        if body is None:
            data = None
        elif isinstance(body, str) and not (record.get("response_content_type") or "").startswith("application/json"):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        return cls(
            status_code=record["status"],
            content_type=(record.get("response_content_type") or "application/json").split(";")[0].lower(),
            data=data,
        )


def request_errors(api: OpenAPI, record: dict, host_url: str) -> list[str]:
    """Why a recorded request does not match its operation in the spec (empty when it does)."""
    return [str(e) for e in api.iter_request_errors(RecordedRequest.from_record(record, host_url))]


def response_errors(api: OpenAPI, record: dict, host_url: str) -> list[str]:
    """Why a recorded response does not match the documented response schema (empty when it does)."""
    request = RecordedRequest.from_record(record, host_url)
    return [str(e) for e in api.iter_response_errors(request, RecordedResponse.from_record(record))]
