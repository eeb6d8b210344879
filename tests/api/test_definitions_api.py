"""`/api/v1/definitions/…` (SPEC §5.1): reads for instructors, writes for admins; content changes make versions."""

import uuid

import pytest

from sessions.models import LabletDefinition
from tests.api.conftest import assert_conflict, assert_field_error
from tests.factories import DEMO_LAB, DefinitionFactory

pytestmark = pytest.mark.django_db
UNKNOWN = uuid.uuid4()


def new_definition(**overrides):
    return {"name": "ccna-lab", "lab_yaml": DEMO_LAB, **overrides}


def test_list_leaves_out_the_topology(instructor_api, definition):
    body = instructor_api.get("/api/v1/definitions/").json()
    assert body["count"] == 1
    row = body["results"][0]
    assert "lab_yaml" not in row
    assert row["resource_requirements"] == {"cpu_cores": 2, "memory_gb": 4, "storage_gb": 10}
    assert {"name", "version", "status", "port_template", "node_count"} <= set(row)


def test_list_filters_and_errors(instructor_api, anon_api, nobody_api):
    DefinitionFactory(name="alpha")
    DefinitionFactory(name="beta", status="INACTIVE")
    names = [r["name"] for r in instructor_api.get("/api/v1/definitions/?status=inactive").json()["results"]]
    assert names == ["beta"]
    assert instructor_api.get("/api/v1/definitions/?name=alp").json()["count"] == 1
    assert_field_error(instructor_api.get("/api/v1/definitions/?status=GONE"), "status")
    assert instructor_api.get("/api/v1/definitions/?page=5").status_code == 404
    assert anon_api.get("/api/v1/definitions/").status_code == 401
    assert nobody_api.get("/api/v1/definitions/").status_code == 403


def test_detail_has_the_topology(instructor_api, anon_api, definition):
    body = instructor_api.get(f"/api/v1/definitions/{definition.pk}/").json()
    assert body["lab_yaml"] == DEMO_LAB
    assert instructor_api.get(f"/api/v1/definitions/{UNKNOWN}/").status_code == 404
    assert anon_api.get(f"/api/v1/definitions/{definition.pk}/").status_code == 401


def test_create(admin_api):
    response = admin_api.post(
        "/api/v1/definitions/",
        new_definition(
            resource_requirements={"cpu_cores": 4},
            license_affinity=["enterprise"],
            grading_enabled=True,
            form_qualified_name="Exam-1",
        ),
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["version"], body["status"], body["node_count"]) == ("1.0.0", "ACTIVE", 2)
    assert body["resource_requirements"]["cpu_cores"] == 4
    assert body["license_affinity"] == ["ENTERPRISE"]
    assert [p["name"] for p in body["port_template"]] == ["edge-router_serial", "workstation_serial", "workstation_vnc"]
    assert response["Location"] == f"/api/v1/definitions/{body['id']}/"
    assert LabletDefinition.objects.get(pk=body["id"]).created_by == "api-staff"


def test_create_by_a_group_admin(group_admin_api):
    assert group_admin_api.post("/api/v1/definitions/", new_definition()).status_code == 201


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"lab_yaml": "nodes: []"}, "lab_yaml"),
        ({"lab_yaml": "nodes: [{id: a, node_definition: x, tags: ['vnc:99999']}]"}, "lab_yaml"),
        ({"lab_yaml": ": : :"}, "lab_yaml"),
        ({"version": "one"}, "version"),
        ({"name": ""}, "name"),
        ({"resource_requirements": {"cpu_cores": 0}}, "resource_requirements.cpu_cores"),
        ({"license_affinity": ["GOLD"]}, "license_affinity[0]"),
        ({"cml_version_min": "2.9", "cml_version_max": "2.8"}, "cml_version_max"),
        ({"grading_enabled": True}, "form_qualified_name"),
        ({"max_duration_minutes": 0}, "max_duration_minutes"),
    ],
)
def test_create_bad_input_is_400_naming_the_field(admin_api, overrides, field):
    assert_field_error(admin_api.post("/api/v1/definitions/", new_definition(**overrides)), field)


def test_create_topology_values_postgres_cannot_store_is_400(admin_api):
    lab = 'nodes: [{id: a, node_definition: "x\\0", tags: ["vnc:5900"]}]'
    assert_field_error(admin_api.post("/api/v1/definitions/", new_definition(lab_yaml=lab)), "lab_yaml")


def test_create_topology_nested_too_deep_is_400(admin_api):
    response = admin_api.post("/api/v1/definitions/", new_definition(lab_yaml="[" * 20000))
    assert assert_field_error(response, "lab_yaml")["lab_yaml"] == ["is nested too deeply to parse"]


def test_create_same_name_and_version_is_400(admin_api):
    admin_api.post("/api/v1/definitions/", new_definition())
    assert_field_error(admin_api.post("/api/v1/definitions/", new_definition()), "version")


def test_create_is_admin_only(instructor_api, anon_api):
    assert instructor_api.post("/api/v1/definitions/", new_definition()).status_code == 403
    assert anon_api.post("/api/v1/definitions/", new_definition()).status_code == 401
    assert not LabletDefinition.objects.exists()


def test_patch_status_only_changes_this_version(admin_api, definition):
    response = admin_api.patch(f"/api/v1/definitions/{definition.pk}/", {"status": "inactive"})
    assert response.status_code == 200
    assert response.json()["id"] == str(definition.pk)
    definition.refresh_from_db()
    assert definition.status == "INACTIVE"


def test_patch_content_publishes_a_new_version(admin_api, definition):
    response = admin_api.patch(
        f"/api/v1/definitions/{definition.pk}/",
        {"description": "v2", "resource_requirements": {"cpu_cores": 8}, "status": "INACTIVE"},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] != str(definition.pk)
    assert (body["version"], body["description"], body["status"]) == ("1.1.0", "v2", "INACTIVE")
    assert body["resource_requirements"]["cpu_cores"] == 8
    definition.refresh_from_db()
    assert (definition.description, definition.cpu_cores, definition.status) == ("", 2, "ACTIVE")


def test_patch_naming_the_same_definition_changes_nothing(admin_api, definition):
    response = admin_api.patch(f"/api/v1/definitions/{definition.pk}/", {"name": definition.name})
    assert (response.status_code, response.json()["id"]) == (200, str(definition.pk))
    assert LabletDefinition.objects.count() == 1


def test_patch_errors(admin_api, instructor_api, definition):
    assert_field_error(admin_api.patch(f"/api/v1/definitions/{definition.pk}/", {"name": "other"}), "name")
    assert_field_error(admin_api.patch(f"/api/v1/definitions/{definition.pk}/", {"version": "0.1.0"}), "version")
    assert_field_error(admin_api.patch(f"/api/v1/definitions/{definition.pk}/", {"status": "GONE"}), "status")
    assert admin_api.patch(f"/api/v1/definitions/{UNKNOWN}/", {"status": "ACTIVE"}).status_code == 404
    assert instructor_api.patch(f"/api/v1/definitions/{definition.pk}/", {"status": "INACTIVE"}).status_code == 403


def test_patch_refused_status_is_409(admin_api):
    archived = DefinitionFactory(status="ARCHIVED")
    assert_conflict(admin_api.patch(f"/api/v1/definitions/{archived.pk}/", {"status": "ACTIVE"}), "ARCHIVED", [])


def test_delete_archives(admin_api, instructor_api, definition):
    assert instructor_api.delete(f"/api/v1/definitions/{definition.pk}/").status_code == 403
    response = admin_api.delete(f"/api/v1/definitions/{definition.pk}/")
    assert response.status_code == 200
    assert response.json()["status"] == "ARCHIVED"
    assert_conflict(admin_api.delete(f"/api/v1/definitions/{definition.pk}/"), "ARCHIVED", [])
    assert admin_api.delete(f"/api/v1/definitions/{UNKNOWN}/").status_code == 404
