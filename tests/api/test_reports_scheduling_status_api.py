"""`/api/v1/score-reports/`, `/api/v1/scheduling/preview`, `/api/v1/status/` (SPEC §5.1)."""

import csv
import io
import uuid

import pytest

from tests.api.conftest import assert_field_error
from tests.factories import DefinitionFactory, ScoreReportFactory, SessionFactory, WorkerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def reports(definition):
    passed = ScoreReportFactory(lablet_session=SessionFactory(definition=definition, owner="alice"))
    passed.sections.create(name="ospf", score=40, max_score=50)
    failed = ScoreReportFactory(lablet_session=SessionFactory(owner="=cmd|bob"), score=10, passed=False)
    return passed, failed


def test_score_reports_list(instructor_api, reports, definition):
    body = instructor_api.get("/api/v1/score-reports/").json()
    assert body["count"] == 2
    alice = next(r for r in body["results"] if r["owner"] == "alice")
    assert alice["definition_id"] == str(definition.pk)
    assert alice["sections"] == [{"name": "ospf", "score": 40.0, "max_score": 50.0, "weight": 1.0, "passed": None}]


def test_score_reports_filters(instructor_api, reports, definition):
    assert instructor_api.get("/api/v1/score-reports/?passed=false").json()["count"] == 1
    assert instructor_api.get("/api/v1/score-reports/?passed=true&owner=alice").json()["count"] == 1
    assert instructor_api.get(f"/api/v1/score-reports/?definition={definition.pk}").json()["count"] == 1
    assert instructor_api.get("/api/v1/score-reports/?from=2999-01-01T00:00:00Z").json()["count"] == 0


@pytest.mark.parametrize(
    ("query", "field"), [("passed=maybe", "passed"), ("from=soon", "from"), ("definition=1", "definition")]
)
def test_score_reports_bad_filter_is_400(instructor_api, query, field):
    assert_field_error(instructor_api.get(f"/api/v1/score-reports/?{query}"), field)


def test_score_reports_csv_export(instructor_api, reports):
    response = instructor_api.get("/api/v1/score-reports/?format=csv&passed=false")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 1
    assert rows[0]["owner"] == "'=cmd|bob"  # a spreadsheet formula is defused
    assert rows[0]["result"] == "FAIL"


def test_score_reports_errors_stay_json_in_csv_mode(instructor_api, anon_api, nobody_api):
    response = instructor_api.get("/api/v1/score-reports/?format=csv&passed=maybe")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"passed": ["must be true or false"]}
    assert instructor_api.get("/api/v1/score-reports/?format=xml").status_code == 404
    assert instructor_api.get("/api/v1/score-reports/?page=4").status_code == 404
    assert anon_api.get("/api/v1/score-reports/").status_code == 401
    assert nobody_api.get("/api/v1/score-reports/?format=csv").status_code == 403


def test_preview(instructor_api, definition):
    fits = WorkerFactory(name="big")
    WorkerFactory(name="small", cpu_cores=1)
    WorkerFactory(name="off", status="STOPPED")
    response = instructor_api.post(
        "/api/v1/scheduling/preview", {"definition_id": str(definition.pk), "timeslot_start": "2030-01-01T09:00:00Z"}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["chosen_worker_id"] == str(fits.pk)
    assert body["demand"]["cpu_cores"] == definition.cpu_cores
    assert body["timeslot_start"] == "2030-01-01T09:00:00Z"
    judged = {c["name"]: c for c in body["candidates"]}
    assert judged["big"]["fits"] and isinstance(judged["big"]["score"], float)
    assert judged["small"]["score"] is None
    assert not judged["small"]["fits"] and judged["small"]["rejection"]
    assert "STOPPED" in judged["off"]["rejection"]


def test_preview_with_no_fit_chooses_none(instructor_api):
    definition = DefinitionFactory(cpu_cores=999)
    WorkerFactory()
    body = instructor_api.post("/api/v1/scheduling/preview", {"definition_id": str(definition.pk)}).json()
    assert body["chosen_worker_id"] is None


def test_preview_errors(instructor_api, anon_api, nobody_api, definition):
    assert_field_error(instructor_api.post("/api/v1/scheduling/preview", {}), "definition_id")
    unknown = {"definition_id": str(uuid.uuid4())}
    assert_field_error(instructor_api.post("/api/v1/scheduling/preview", unknown), "definition_id")
    body = {"definition_id": str(definition.pk), "timeslot_start": "tomorrow"}
    assert_field_error(instructor_api.post("/api/v1/scheduling/preview", body), "timeslot_start")
    assert anon_api.post("/api/v1/scheduling/preview", body).status_code == 401
    assert nobody_api.post("/api/v1/scheduling/preview", body).status_code == 403


def test_status(instructor_api, session):
    WorkerFactory(status="DRAINING")
    body = instructor_api.get("/api/v1/status/").json()
    assert body["version"] and body["versions"]["django"].startswith("5.2")
    assert body["sessions"]["PENDING"] == 1 and body["sessions"]["RUNNING"] == 0
    assert body["workers"]["DRAINING"] == 1
    # The control loops are not running yet: nothing is claimed about them.
    loops = {loop["name"]: loop for loop in body["loops"]}
    assert {"placement", "lablets"} <= set(loops)
    assert loops["placement"]["healthy"] is None  # never ticked in this test
    assert body["queue_depth"] == 1  # the PENDING session, due now
    assert body["leader"] is None


def test_status_auth(anon_api, nobody_api):
    assert anon_api.get("/api/v1/status/").status_code == 401
    assert nobody_api.get("/api/v1/status/").status_code == 403
