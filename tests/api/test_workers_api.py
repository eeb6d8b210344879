"""`/api/v1/workers/…`, `/worker-templates/`, `/lab-records/` (SPEC §5.1): fleet reads, admin-only actions."""

import uuid

import pytest

from tests.api.conftest import assert_conflict, assert_field_error
from tests.factories import LabRecordFactory, SessionFactory, TemplateFactory, WorkerFactory
from workers.models import CMLWorker, LicenseRequest, Port, WorkerStatusChange

pytestmark = pytest.mark.django_db
UNKNOWN = uuid.uuid4()


def test_list_with_derived_usage(instructor_api, definition):
    worker = WorkerFactory()
    SessionFactory(definition=definition, status="RUNNING", worker=worker)
    response = instructor_api.get("/api/v1/workers/")
    assert response.status_code == 200
    row = response.json()["results"][0]
    assert row["capacity"] == {"cpu_cores": 16, "memory_gb": 64, "storage_gb": 400, "max_nodes": 60}
    assert row["usage"]["cpu_cores"] == definition.cpu_cores and row["usage"]["sessions"] == 1
    assert row["metrics"]["cpu_percent"] is None
    assert instructor_api.get(f"/api/v1/workers/{worker.pk}/").json()["usage"]["sessions"] == 1


def test_list_filters_and_errors(instructor_api, anon_api, nobody_api):
    WorkerFactory(status="RUNNING")
    WorkerFactory(status="STOPPED", region="eu-west-1")
    assert instructor_api.get("/api/v1/workers/?status=stopped").json()["count"] == 1
    assert instructor_api.get("/api/v1/workers/?region=eu-west-1").json()["count"] == 1
    assert_field_error(instructor_api.get("/api/v1/workers/?status=ASLEEP"), "status")
    assert instructor_api.get("/api/v1/workers/?page=3").status_code == 404
    assert anon_api.get("/api/v1/workers/").status_code == 401
    assert nobody_api.get("/api/v1/workers/").status_code == 403


def test_detail_404_and_auth(instructor_api, anon_api, worker):
    assert instructor_api.get(f"/api/v1/workers/{UNKNOWN}/").status_code == 404
    assert anon_api.get(f"/api/v1/workers/{worker.pk}/").status_code == 401


def test_create_from_a_template(admin_api):
    template = TemplateFactory(name="m5-test")
    response = admin_api.post("/api/v1/workers/", {"template": "m5-test"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"].startswith("m5-test-")
    assert (body["status"], body["desired_status"], body["template_name"]) == ("PENDING", "RUNNING", "m5-test")
    assert body["capacity"]["cpu_cores"] == template.cpu_cores
    assert admin_api.post("/api/v1/workers/", {"template": str(template.pk), "name": "by-id"}).status_code == 201


def test_create_registers_an_existing_endpoint(admin_api):
    response = admin_api.post(
        "/api/v1/workers/",
        {"name": "lab-host", "cml_base_url": "https://cml.example.test", "cpu_cores": 32, "license_type": "personal"},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["license_type"], body["cml_base_url"]) == (
        "RUNNING",
        "PERSONAL",
        "https://cml.example.test",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "template"),
        ({"template": "no-such-template"}, "template"),
        ({"cml_base_url": "https://x.test"}, "name"),
        ({"name": "x", "cml_base_url": "not a url"}, "cml_base_url"),
        ({"name": "x", "cml_base_url": "https://x.test", "cpu_cores": -1}, "cpu_cores"),
        (
            {"name": "x", "cml_base_url": "https://x.test", "port_range_start": 9000, "port_range_end": 8000},
            "port_range_end",
        ),
        ({"name": "x", "cml_base_url": "https://x.test", "status": "SLEEPY"}, "status"),
        ({"name": "x", "cml_base_url": "https://x.test", "public_ip": "999.1.1.1"}, "public_ip"),
    ],
)
def test_create_bad_input_is_400(admin_api, body, field):
    assert_field_error(admin_api.post("/api/v1/workers/", body), field)


def test_create_duplicates_are_400(admin_api):
    WorkerFactory(name="taken", aws_instance_id="i-123")
    body = {"cml_base_url": "https://x.test"}
    assert_field_error(admin_api.post("/api/v1/workers/", {**body, "name": "taken"}), "name")
    assert_field_error(
        admin_api.post("/api/v1/workers/", {**body, "name": "n", "aws_instance_id": "i-123"}), "aws_instance_id"
    )


def test_create_disabled_template_is_400(admin_api):
    TemplateFactory(name="off", enabled=False)
    assert_field_error(admin_api.post("/api/v1/workers/", {"template": "off"}), "template")


def test_admin_routes_refuse_instructors(instructor_api, anon_api, worker):
    TemplateFactory(name="t")
    assert instructor_api.post("/api/v1/workers/", {"template": "t"}).status_code == 403
    assert anon_api.post("/api/v1/workers/", {"template": "t"}).status_code == 401
    for verb in ("start", "stop", "drain", "cancel-drain"):
        assert instructor_api.post(f"/api/v1/workers/{worker.pk}/{verb}").status_code == 403
        assert anon_api.post(f"/api/v1/workers/{worker.pk}/{verb}").status_code == 401
    assert instructor_api.post(f"/api/v1/workers/{worker.pk}/license", {"token": "t"}).status_code == 403
    assert instructor_api.delete(f"/api/v1/workers/{worker.pk}/license").status_code == 403
    assert instructor_api.delete(f"/api/v1/workers/{worker.pk}/").status_code == 403
    worker.refresh_from_db()
    assert (worker.status, worker.desired_status, worker.license_status) == ("RUNNING", "RUNNING", "UNREGISTERED")


def test_delete_sets_desired_terminated(admin_api, worker):
    assert_field_error(admin_api.delete(f"/api/v1/workers/{worker.pk}/?reason={'x' * 2001}"), "reason")
    response = admin_api.delete(f"/api/v1/workers/{worker.pk}/?reason=retired")
    assert response.status_code == 200
    assert response.json()["desired_status"] == "TERMINATED"
    assert WorkerStatusChange.objects.get(worker=worker, field="desired_status").reason == "retired"
    assert admin_api.delete(f"/api/v1/workers/{worker.pk}/").status_code == 200  # idempotent
    assert admin_api.delete(f"/api/v1/workers/{UNKNOWN}/").status_code == 404


def test_start_and_stop(admin_api, worker):
    assert (
        admin_api.post(f"/api/v1/workers/{worker.pk}/stop", {"reason": "night"}).json()["desired_status"] == "STOPPED"
    )
    assert admin_api.post(f"/api/v1/workers/{worker.pk}/start").json()["desired_status"] == "RUNNING"
    change = WorkerStatusChange.objects.filter(worker=worker, field="desired_status").first()
    assert (change.to_status, change.reason, change.actor) == ("STOPPED", "night", "api-staff")


def test_start_a_terminated_worker_is_409(admin_api):
    gone = WorkerFactory(status="TERMINATED", desired_status="TERMINATED")
    assert_conflict(admin_api.post(f"/api/v1/workers/{gone.pk}/start"), "TERMINATED", [])
    going = WorkerFactory(status="RUNNING", desired_status="TERMINATED")
    assert_conflict(admin_api.post(f"/api/v1/workers/{going.pk}/stop"), "RUNNING", ["TERMINATED"])


def test_start_errors(admin_api, worker):
    assert_field_error(admin_api.post(f"/api/v1/workers/{worker.pk}/start", {"reason": "x" * 2001}), "reason")
    assert admin_api.post(f"/api/v1/workers/{UNKNOWN}/start").status_code == 404


def test_drain_and_cancel(admin_api, worker):
    response = admin_api.post(f"/api/v1/workers/{worker.pk}/drain")
    assert response.status_code == 200
    assert response.json()["status"] == "DRAINING" and response.json()["drain_deadline"]
    assert_conflict(admin_api.post(f"/api/v1/workers/{worker.pk}/drain"), "DRAINING")
    assert admin_api.post(f"/api/v1/workers/{worker.pk}/cancel-drain").json()["status"] == "RUNNING"
    assert_conflict(admin_api.post(f"/api/v1/workers/{worker.pk}/cancel-drain"), "RUNNING")
    assert admin_api.post(f"/api/v1/workers/{UNKNOWN}/drain").status_code == 404
    assert admin_api.post(f"/api/v1/workers/{UNKNOWN}/cancel-drain").status_code == 404


def test_license_register_and_deregister(admin_api, worker):
    secret = "lic-SECRET-token-123"
    response = admin_api.post(f"/api/v1/workers/{worker.pk}/license", {"token": secret})
    assert response.status_code == 200
    assert response.json()["license_status"] == "REGISTERING"
    assert secret not in response.content.decode()
    assert not WorkerStatusChange.objects.filter(reason__contains=secret).exists()
    # The token waits for the worker reconciler in the licence request, not on the worker.
    assert LicenseRequest.objects.get(worker=worker, action="REGISTER").token == secret
    assert_conflict(admin_api.post(f"/api/v1/workers/{worker.pk}/license", {"token": secret}), "REGISTERING", [])
    assert_conflict(admin_api.delete(f"/api/v1/workers/{worker.pk}/license"), "REGISTERING", [])
    CMLWorker.objects.filter(pk=worker.pk).update(license_status="REGISTERED")
    response = admin_api.delete(f"/api/v1/workers/{worker.pk}/license")
    assert response.status_code == 200 and response.json()["license_status"] == "DEREGISTERING"


def test_license_errors(admin_api, worker):
    assert_field_error(admin_api.post(f"/api/v1/workers/{worker.pk}/license", {}), "token")
    assert_field_error(admin_api.post(f"/api/v1/workers/{worker.pk}/license", {"token": "x" * 5000}), "token")
    assert_field_error(admin_api.post(f"/api/v1/workers/{worker.pk}/license", {"token": "not a token!"}), "token")
    assert admin_api.post(f"/api/v1/workers/{UNKNOWN}/license", {"token": "t"}).status_code == 404
    assert_conflict(admin_api.delete(f"/api/v1/workers/{worker.pk}/license"), "UNREGISTERED", ["REGISTERING"])


def test_templates(instructor_api, anon_api, nobody_api):
    TemplateFactory(name="tiny", cost_per_hour="0.25")
    rows = instructor_api.get("/api/v1/worker-templates/?page_size=500").json()["results"]
    tiny = next(r for r in rows if r["name"] == "tiny")
    assert tiny["capacity"]["max_nodes"] == 60 and tiny["cost_per_hour"] == 0.25
    assert_field_error(instructor_api.get("/api/v1/worker-templates/?page_size=-1"), "page_size")
    assert instructor_api.get("/api/v1/worker-templates/?page=99").status_code == 404
    assert anon_api.get("/api/v1/worker-templates/").status_code == 401
    assert nobody_api.get("/api/v1/worker-templates/").status_code == 403


def test_lab_records(instructor_api, anon_api, nobody_api, worker):
    lab = LabRecordFactory(worker=worker, status="BOOTED")
    Port.objects.create(worker=worker, port=2001, lab_record=lab, name="r1_ssh")
    LabRecordFactory(status="WIPED")
    body = instructor_api.get(f"/api/v1/lab-records/?worker={worker.pk}").json()
    assert body["count"] == 1
    assert body["results"][0]["ports"] == {"r1_ssh": 2001}
    assert instructor_api.get("/api/v1/lab-records/?status=wiped").json()["count"] == 1
    assert_field_error(instructor_api.get("/api/v1/lab-records/?worker=abc"), "worker")
    assert instructor_api.get("/api/v1/lab-records/?page=9").status_code == 404
    assert anon_api.get("/api/v1/lab-records/").status_code == 401
    assert nobody_api.get("/api/v1/lab-records/").status_code == 403
