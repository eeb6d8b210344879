"""Evidence and re-grade (SPEC §9) through the real loops (placement, lablet, grading, re-grade) against the
simulators, the moto simulator's S3 included."""

import hashlib
from datetime import timedelta

import pytest
import requests
import yaml
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient

from grading.evidence import evidence_tick
from grading.models import EvidenceCollection, EvidenceItem, Regrade, ScoreReport
from grading.regrade import reconcile_regrade, record_failure, regrades_needing_work
from grading.storage import evidence_store
from lcm import http, reconcile
from lcm.api.tokens import token_create
from lcm.roles import INSTRUCTOR_GROUP
from scheduling.capacity import Demand, rejection_reason
from scheduling.selectors import worker_capacities
from sessions.booking import session_create
from sessions.models import LabletSession
from sessions.services import session_transition
from tests.factories import DefinitionFactory
from tests.support.loops import drive, status_of
from tests.support.simulators import running_simulators, sim_control
from workers.clients.cml import forget_tokens
from workers.models import CMLWorker, LabRecord, Port, SystemSettings

pytestmark = pytest.mark.django_db

KINDS = {"lab_yaml", "node_config", "lds_record", "lds_responses", "grading"}
CANDIDATE_CONFIG = "hostname candidate-edge\ninterface GigabitEthernet0/0\n ip address 10.9.9.1 255.255.255.0\n"


@pytest.fixture
def sims(settings):
    """The simulators with moto (its S3 holds the evidence), evidence switched on."""
    with running_simulators(cml_port=0, lds_port=0, grading_port=0, moto_port=0, zero_delay=True) as handle:
        settings.LCM_LDS_BASE_URL = handle.urls["lds"]
        settings.LCM_GRADING_BASE_URL = handle.urls["grading"]
        settings.LCM_HTTP_READ_TIMEOUT = 5.0
        settings.LCM_HTTP_RETRIES = 0
        settings.LCM_EVIDENCE_ENABLED = True
        settings.LCM_EVIDENCE_ENDPOINT_URL = handle.urls["moto"]
        forget_tokens()
        yield handle


@pytest.fixture
def api(django_user_model):
    user = django_user_model.objects.create_user("evidence-instructor", "i@example.com", "pw")
    user.groups.add(Group.objects.get_or_create(name=INSTRUCTOR_GROUP)[0])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(user, actor='test').key}")
    return client


def _s3_faults(sims, rules):
    sim_control.post(f"{sims.urls['moto']}/_sim/faults", json=rules, timeout=5).raise_for_status()


def _configure(sims, session, node_label: str, text: str) -> None:
    """The candidate changes a running node (at its console, in real life): the CML simulator's `/_sim/` API."""
    session.refresh_from_db()
    url = (
        f"{sims.urls['cml']}/_sim/workers/{session.worker.name}/labs/{session.cml_lab_id}/nodes/{node_label}"
        "/configuration"
    )
    sim_control.put(url, json={"configuration": text}, timeout=5).raise_for_status()


def _run_to_running(sims, sim_worker, **definition_fields):
    worker = sim_worker("w1")
    definition = DefinitionFactory(boot_lead_minutes=30, **definition_fields)
    session = session_create(definition=definition, owner="alice@example.com", actor="test")
    drive(lambda: status_of(session) == "READY")
    session_transition(session, "RUNNING", actor="instructor", reason="Start Session")
    _configure(sims, session, "edge-router", CANDIDATE_CONFIG)
    return worker, session


def _archived_with_evidence(sims, sim_worker):
    worker, session = _run_to_running(sims, sim_worker)
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: status_of(session) == "ARCHIVED")
    session.refresh_from_db()
    return worker, session


def _notes(session) -> list[str]:
    return list(session.history.values_list("reason", flat=True))


def test_an_archived_session_has_evidence_of_every_kind_downloadable_with_its_sha256(sims, sim_worker, api):
    worker, session = _archived_with_evidence(sims, sim_worker)
    collection = EvidenceCollection.objects.get(lablet_session=session)
    assert collection.status == "RECORDED", collection.reason
    listed = api.get(f"/api/v1/sessions/{session.pk}/evidence/").json()["results"]
    assert {item["kind"] for item in listed} == KINDS
    assert {item["name"] for item in listed if item["kind"] == "node_config"} == {"edge-router", "workstation"}
    for item in listed:
        answer = api.get(item["download"])
        assert answer.status_code == 200, item
        assert hashlib.sha256(answer.content).hexdigest() == item["sha256"]
        assert len(answer.content) == item["size"]
    lab_yaml = next(item for item in listed if item["kind"] == "lab_yaml")
    nodes = {n["label"]: n for n in yaml.safe_load(api.get(lab_yaml["download"]).content)["nodes"]}
    assert nodes["edge-router"]["configuration"] == CANDIDATE_CONFIG
    edge = next(item for item in listed if item["kind"] == "node_config" and item["name"] == "edge-router")
    assert api.get(edge["download"]).content.decode() == CANDIDATE_CONFIG
    # Recorded before the wipe, noted on the history; the lab kept for reuse has its definition's configuration
    # again, so the next candidate does not boot from this one's.
    assert any(note.startswith("evidence recorded: ") for note in _notes(session))
    lab = session.lab_record
    assert lab.status == "WIPED"
    cml_nodes = requests.get(
        f"{worker.cml_base_url}/api/v0/labs/{lab.cml_lab_id}/nodes",
        params={"data": "true"},
        headers={"Authorization": f"Bearer {_token(worker)}"},
        timeout=5,
    ).json()
    assert all(node["configuration"] != CANDIDATE_CONFIG for node in cml_nodes)
    # Every row has its object and no object lacks a row.
    store = evidence_store()
    keys = set(store.keys(f"sessions/{session.pk}/"))
    assert keys == set(EvidenceItem.objects.filter(lablet_session=session).values_list("object_key", flat=True))


def _token(worker) -> str:
    from workers.clients.cml import cml_client_for  # Imported here: only this helper needs a raw token.

    return cml_client_for(worker).authenticate()


def test_s3_failing_past_the_evidence_timeout_lets_teardown_finish_and_says_evidence_missing(sims, sim_worker):
    worker, session = _run_to_running(sims, sim_worker)
    _s3_faults(sims, [{"operation": "PutObject", "code": "InternalError", "times": None}])
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: EvidenceCollection.objects.filter(lablet_session=session, attempts__gte=1).exists())
    assert status_of(session) == "STOPPING"  # the lab waits for its evidence
    assert LabRecord.objects.get(pk=session.lab_record_id).status == "BOOTED"
    # The evidence timeout passes while S3 still fails.
    past = timezone.now() - timedelta(minutes=SystemSettings.load().evidence_timeout_minutes + 1)
    EvidenceCollection.objects.filter(lablet_session=session).update(started_at=past, next_attempt_at=None)
    drive(lambda: status_of(session) == "ARCHIVED")
    collection = EvidenceCollection.objects.get(lablet_session=session)
    assert collection.status == "MISSING"
    assert any(note.startswith("evidence missing: s3 PutObject") for note in _notes(session)), _notes(session)
    session.refresh_from_db()
    assert session.lab_record.status == "WIPED"
    assert worker_capacities([worker.pk])[str(worker.pk)].sessions == 0
    # No row was written without its object; the sweep leaves no object without a row once S3 is back.
    sim_control.delete(f"{sims.urls['moto']}/_sim/faults", timeout=5).raise_for_status()
    evidence_tick()
    keys = set(evidence_store().keys(f"sessions/{session.pk}/"))
    assert keys == set(EvidenceItem.objects.filter(lablet_session=session).values_list("object_key", flat=True))


def test_the_s3_endpoint_down_past_the_timeout_lets_teardown_finish_and_says_evidence_missing(
    sims, sim_worker, settings
):
    from lcm.tools.processes import free_ports  # Imported here: a port nobody listens on, for this test only.

    worker, session = _run_to_running(sims, sim_worker)
    settings.LCM_EVIDENCE_ENDPOINT_URL = f"http://127.0.0.1:{free_ports(1)[0]}"  # the store is down
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: EvidenceCollection.objects.filter(lablet_session=session, attempts__gte=1).exists())
    assert status_of(session) == "STOPPING" and LabRecord.objects.get(pk=session.lab_record_id).status == "BOOTED"
    past = timezone.now() - timedelta(minutes=SystemSettings.load().evidence_timeout_minutes + 1)
    EvidenceCollection.objects.filter(lablet_session=session).update(started_at=past, next_attempt_at=None)
    drive(lambda: status_of(session) == "ARCHIVED")
    assert EvidenceCollection.objects.get(lablet_session=session).status == "MISSING"
    assert any(note.startswith("evidence missing: s3 ") for note in _notes(session)), _notes(session)
    assert not EvidenceItem.objects.filter(lablet_session=session).exists()  # no row without its object
    assert worker_capacities([worker.pk])[str(worker.pk)].sessions == 0


def test_s3_recovering_within_the_timeout_leaves_nothing_missing(sims, sim_worker, monkeypatch):
    import grading.evidence as evidence  # Imported here: patched for this test only.

    monkeypatch.setattr(evidence, "backoff", lambda attempts, cap=60: timedelta(0))
    _worker, session = _run_to_running(sims, sim_worker)
    _s3_faults(sims, [{"operation": "PutObject", "code": "InternalError", "times": 3}])
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: status_of(session) == "ARCHIVED")
    collection = EvidenceCollection.objects.get(lablet_session=session)
    assert collection.status == "RECORDED" and collection.attempts >= 1
    assert set(EvidenceItem.objects.filter(lablet_session=session).values_list("kind", flat=True)) == KINDS
    assert not any("evidence missing" in note for note in _notes(session))


def _drive_regrades(until, ticks=60):
    for _ in range(ticks):
        if until():
            return
        for regrade_id in regrades_needing_work():
            reconcile.run("regrades", regrade_id, reconcile_regrade, record_failure, passes=8)
    assert until(), "the re-grade did not finish"


def test_regrade_imports_the_evidence_lab_grades_it_and_leaves_nothing_held(sims, sim_worker, api, client):
    worker, session = _archived_with_evidence(sims, sim_worker)
    first = session.score_report
    labs_before = set(LabRecord.objects.exclude(status="DELETED").values_list("pk", flat=True))
    ports_before = Port.objects.count()

    answer = api.post(f"/api/v1/sessions/{session.pk}/regrade")
    assert answer.status_code == 202, answer.json()
    regrade = Regrade.objects.get(pk=answer.json()["id"])
    _drive_regrades(lambda: Regrade.objects.get(pk=regrade.pk).status in ("DONE", "FAILED"))
    regrade = Regrade.objects.get(pk=regrade.pk)
    assert regrade.status == "DONE", (regrade.error, regrade.last_error)
    session.refresh_from_db()
    assert session.status == "ARCHIVED"
    reports = list(ScoreReport.objects.filter(lablet_session=session).order_by("created_at"))
    assert len(reports) == 2 and reports[0].pk == first.pk
    assert session.score_report.pk == reports[1].pk == regrade.score_report_id
    # The re-grade's lab was imported from the evidence (the candidate's configuration in it), then deleted.
    lab = LabRecord.objects.get(pk=regrade.lab_record_id)
    assert lab.status == "DELETED" and lab.worker_id == worker.pk
    assert set(LabRecord.objects.exclude(status="DELETED").values_list("pk", flat=True)) == labs_before
    assert Port.objects.count() == ports_before
    assert worker_capacities([worker.pk])[str(worker.pk)].sessions == 0
    notes = _notes(session)
    assert any("re-grade GRADING → TEARING_DOWN: score" in note for note in notes), notes
    assert any("re-grade TEARING_DOWN → DONE" in note for note in notes), notes
    # The session page shows both reports, the newest current.
    client.force_login(session_owner_admin())
    page = client.get(f"/sessions/{session.pk}/").content.decode()
    assert page.count('data-score-report="') == 2
    assert 'data-current="true"' in page


def session_owner_admin():
    from django.contrib.auth import get_user_model  # Imported here: the user model needs the app registry.

    return get_user_model().objects.create_superuser("page-admin", "p@example.com", "pw")


def test_regrade_is_refused_409_without_evidence_or_before_archived(sims, sim_worker, api, settings):
    _worker, running = _run_to_running(sims, sim_worker)
    answer = api.post(f"/api/v1/sessions/{running.pk}/regrade")
    assert answer.status_code == 409 and "ARCHIVED" in answer.json()["detail"]

    settings.LCM_EVIDENCE_ENABLED = False
    session_transition(running, "STOPPING", actor="instructor")
    drive(lambda: status_of(running) == "ARCHIVED")
    answer = api.post(f"/api/v1/sessions/{running.pk}/regrade")
    assert answer.status_code == 409 and "no lab_yaml evidence" in answer.json()["detail"]
    assert not Regrade.objects.exists()


def test_retention_deletes_old_objects_and_marks_their_rows_expired(sims, sim_worker, api):
    _worker, session = _archived_with_evidence(sims, sim_worker)
    items = EvidenceItem.objects.filter(lablet_session=session)
    old = timezone.now() - timedelta(days=SystemSettings.load().evidence_retention_days + 1)
    first = items.order_by("kind").first()
    items.exclude(pk=first.pk).update(created_at=old)
    evidence_tick()
    store = evidence_store()
    for item in EvidenceItem.objects.filter(lablet_session=session):
        if item.pk == first.pk:
            assert item.expired_at is None and store.exists(item.object_key)
        else:
            assert item.expired_at is not None and not store.exists(item.object_key)
            assert api.get(f"/api/v1/sessions/{session.pk}/evidence/{item.pk}/").status_code == 404
    LabletSession.objects.filter(pk=session.pk)  # the session itself is untouched
    assert status_of(session) == "ARCHIVED"


def test_a_pass_dying_between_an_object_and_its_row_is_finished_and_leaves_no_orphan(sims, sim_worker, monkeypatch):
    """Object first, then row: a pass that dies between the two leaves an object without a row, which the next
    pass rewrites and records; an object no row will ever name is swept once the collection is finished."""
    import grading.evidence as evidence  # Imported here: patched for this test only.

    monkeypatch.setattr(evidence, "backoff", lambda attempts, cap=60: timedelta(0))
    _worker, session = _run_to_running(sims, sim_worker)
    real, died = EvidenceItem.objects.update_or_create, []

    def dies_once(**kwargs):
        if not died and kwargs["defaults"]["kind"] == "lab_yaml":
            died.append(kwargs["object_key"])
            raise RuntimeError("the worker died here")
        return real(**kwargs)

    monkeypatch.setattr(EvidenceItem.objects, "update_or_create", dies_once)
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: bool(died))
    store = evidence_store()
    assert store.exists(died[0]) and not EvidenceItem.objects.filter(object_key=died[0]).exists()
    assert LabRecord.objects.get(pk=session.lab_record_id).status == "BOOTED"  # not wiped meanwhile
    drive(lambda: status_of(session) == "ARCHIVED")
    assert EvidenceItem.objects.filter(object_key=died[0], kind="lab_yaml").exists()
    assert EvidenceCollection.objects.get(lablet_session=session).status == "RECORDED"

    stray = f"sessions/{session.pk}/node_config/left-by-a-dead-pass"
    store.put(stray, b"x")
    EvidenceCollection.objects.filter(lablet_session=session).update(swept_at=None)
    evidence_tick()
    keys = set(store.keys(f"sessions/{session.pk}/"))
    assert stray not in keys
    assert keys == set(EvidenceItem.objects.filter(lablet_session=session).values_list("object_key", flat=True))


@pytest.mark.parametrize(
    ("client", "method"),
    [("cml", "import_lab"), ("cml", "start_lab"), ("grading", "grade"), ("grading", "create_session")],
)
def test_a_regrade_pass_losing_an_answer_is_finished_by_the_next_without_duplicates(
    sims, sim_worker, api, monkeypatch, client, method
):
    """Each external step of a re-grade takes effect but its answer is lost (as when the worker dies right after
    the call): the next pass finds what it did (the lab by its title, the engine session by its id) and goes on."""
    import grading.regrade as regrade_module
    from grading.clients.grading_engine import GradingEngineClient  # Imported here: patched for this test only.
    from workers.clients.cml import CMLClient

    monkeypatch.setattr(regrade_module, "backoff", lambda attempts: timedelta(0))
    worker, session = _archived_with_evidence(sims, sim_worker)
    target = {"cml": CMLClient, "grading": GradingEngineClient}[client]
    real, lost = getattr(target, method), []

    def answer_lost_once(self, *args, **kwargs):
        answer = real(self, *args, **kwargs)
        if not lost:
            lost.append(method)
            raise http.Unavailable(client, method, "connection lost")
        return answer

    monkeypatch.setattr(target, method, answer_lost_once)
    regrade_id = api.post(f"/api/v1/sessions/{session.pk}/regrade").json()["id"]
    _drive_regrades(lambda: Regrade.objects.get(pk=regrade_id).status in ("DONE", "FAILED"))
    regrade = Regrade.objects.get(pk=regrade_id)
    assert lost == [method] and regrade.status == "DONE", (regrade.error, regrade.last_error)
    assert ScoreReport.objects.filter(lablet_session=session).count() == 2
    assert LabRecord.objects.get(pk=regrade.lab_record_id).status == "DELETED"
    in_cml = sim_control.get(f"{sims.urls['cml']}/_sim/workers/{worker.name}", timeout=5).json()["labs"]
    assert list(in_cml) == [session.lab_record.cml_lab_id]  # only the session's own wiped lab, kept for reuse


def test_a_regrade_that_gives_up_still_deletes_its_lab_and_ends_failed(sims, sim_worker, api, monkeypatch, settings):
    import grading.regrade as regrade_module  # Imported here: patched for this test only.

    monkeypatch.setattr(regrade_module, "backoff", lambda attempts: timedelta(0))
    settings.LCM_MAX_RECONCILE_ATTEMPTS = 3
    worker, session = _archived_with_evidence(sims, sim_worker)
    ports_before = Port.objects.count()
    sim_control.post(
        f"{sims.urls['cml']}/_sim/faults", json={"operation": "start_lab", "status": 500, "times": None}, timeout=5
    ).raise_for_status()
    regrade_id = api.post(f"/api/v1/sessions/{session.pk}/regrade").json()["id"]
    _drive_regrades(lambda: Regrade.objects.get(pk=regrade_id).status in ("DONE", "FAILED"))
    regrade = Regrade.objects.get(pk=regrade_id)
    assert regrade.status == "FAILED" and "start_lab" in regrade.error
    assert LabRecord.objects.get(pk=regrade.lab_record_id).status == "DELETED"
    assert Port.objects.count() == ports_before
    assert ScoreReport.objects.filter(lablet_session=session).count() == 1
    assert any("re-grade TEARING_DOWN → FAILED" in note for note in _notes(session))
    assert status_of(session) == "ARCHIVED"
    answer = api.post(f"/api/v1/sessions/{session.pk}/regrade")  # a new one may be asked for
    assert answer.status_code == 202 and answer.json()["id"] != str(regrade_id)


def test_a_lab_held_for_review_is_stopped_only_after_its_evidence_and_wiped_after_the_hold(sims, sim_worker):
    from sessions.services import session_end_hold  # Imported here: only this test ends a hold.

    _worker, session = _run_to_running(sims, sim_worker, hold_for_review_hours=1)
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: status_of(session) == "STOPPED")
    collection = EvidenceCollection.objects.get(lablet_session=session)
    assert collection.status == "RECORDED"  # taken from the running nodes, before the lab was stopped
    lab_yaml = EvidenceItem.objects.get(lablet_session=session, kind="lab_yaml")
    nodes = yaml.safe_load(evidence_store().get(lab_yaml.object_key))["nodes"]
    assert {n["label"]: n["configuration"] for n in nodes}["edge-router"] == CANDIDATE_CONFIG
    assert LabRecord.objects.get(pk=session.lab_record_id).status == "STOPPED"
    session_end_hold(LabletSession.objects.get(pk=session.pk), actor="instructor")
    drive(lambda: status_of(session) == "ARCHIVED")
    assert LabRecord.objects.get(pk=session.lab_record_id).status == "WIPED"
    assert EvidenceItem.objects.filter(lablet_session=session).count() == lab_yaml_count(session)


def lab_yaml_count(session) -> int:
    """Items of a session with the demo lab (two nodes): every kind once, a node config per node."""
    return len(KINDS) - 1 + 2


def test_a_regrade_holds_its_workers_capacity_until_it_is_done(sims, sim_worker, api):
    worker, session = _archived_with_evidence(sims, sim_worker)
    whole_worker = Demand(worker.cpu_cores, 1, 1, 1, 0)
    assert rejection_reason(worker_capacities([worker.pk])[str(worker.pk)], whole_worker) is None
    regrade_id = api.post(f"/api/v1/sessions/{session.pk}/regrade").json()["id"]
    reconcile_regrade(regrade_id)  # one pass: REQUESTED → BOOTING, its lab recorded on the worker
    assert Regrade.objects.get(pk=regrade_id).status == "BOOTING"
    held = worker_capacities([worker.pk])[str(worker.pk)]
    assert held.sessions == 1 and held.cpu_used == session.definition.cpu_cores
    # Placement reads the same capacities: a booking needing the whole worker does not fit beside the re-grade.
    assert "cpu" in rejection_reason(held, whole_worker).lower()
    _drive_regrades(lambda: Regrade.objects.get(pk=regrade_id).status in ("DONE", "FAILED"))
    assert Regrade.objects.get(pk=regrade_id).status == "DONE"
    assert rejection_reason(worker_capacities([worker.pk])[str(worker.pk)], whole_worker) is None


def test_a_regrade_with_no_worker_room_gives_up_after_the_wait_and_says_why(sims, sim_worker, api, settings):
    worker, session = _archived_with_evidence(sims, sim_worker)
    CMLWorker.objects.filter(pk=worker.pk).update(cpu_cores=0)  # its declared size: nothing fits on it any more
    regrade_id = api.post(f"/api/v1/sessions/{session.pk}/regrade").json()["id"]
    reconcile_regrade(regrade_id)
    assert Regrade.objects.get(pk=regrade_id).status == "REQUESTED"  # waits: within the wait
    waited = timedelta(minutes=settings.LCM_REGRADE_WAIT_MINUTES + 1)
    Regrade.objects.filter(pk=regrade_id).update(created_at=timezone.now() - waited)
    _drive_regrades(lambda: Regrade.objects.get(pk=regrade_id).status in ("DONE", "FAILED"))
    regrade = Regrade.objects.get(pk=regrade_id)
    assert regrade.status == "FAILED" and regrade.lab_record_id is None
    assert f"within {settings.LCM_REGRADE_WAIT_MINUTES:g} minutes" in regrade.error
    assert any("gave up: no RUNNING worker had room" in note for note in _notes(session)), _notes(session)
    assert status_of(session) == "ARCHIVED"
