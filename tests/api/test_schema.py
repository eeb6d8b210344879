"""The OpenAPI document (SPEC §5.1): valid, warning-free, served to signed-in users, docs offline."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from lcm.api.schema import openapi_document

pytestmark = pytest.mark.django_db


def test_spectacular_validate_fail_on_warn(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stdout=StringIO())
    assert out.read_text().startswith("openapi: 3.0.3")


def test_schema_is_served_to_signed_in_users_only(anon_api, instructor_api):
    assert anon_api.get("/api/schema/").status_code == 401
    response = instructor_api.get("/api/schema/?format=json")
    assert response.status_code == 200
    assert json.loads(response.content) == openapi_document()


def test_every_operation_documents_its_errors():
    schema = openapi_document()
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert len(operations) >= 39
    for path, method, op in operations:
        codes = set(op["responses"])
        assert "401" in codes, (method, path)
        assert ("403" in codes) == path.startswith("/api/v1/"), (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        if method in ("post", "patch"):
            assert "400" in codes, (method, path)
        assert op.get("security"), (method, path)
    conflicts = {(p, m) for p, m, op in operations if "409" in op["responses"]}
    assert ("/api/v1/sessions/{id}/transition", "post") in conflicts
    assert ("/api/v1/sessions/", "post") in conflicts


def test_docs_page_is_offline_and_behind_login(client, instructor):
    assert client.get("/api/docs/").status_code == 302
    client.force_login(instructor)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist" in page
    assert "cdn.jsdelivr" not in page and "unpkg" not in page
