"""Lab drift (SPEC §11) through the real loops and the CML simulator: a READY or RUNNING session whose lab is deleted
or stopped behind LCM's back is flagged degraded within a drift interval, listed as needing attention, and
"Re-instantiate" brings up a fresh lab on the same worker with the same ports, with history saying why."""

import pytest
from django.test import Client

from sessions.booking import session_create
from sessions.drift import check
from sessions.labyaml import rewritten_topology
from sessions.models import LabletSession
from sessions.services import session_reinstantiate, session_transition
from tests.factories import DefinitionFactory
from tests.support.loops import drive, status_of
from tests.support.simulators import sim_control
from tests.support.waiting import poll
from workers import labs
from workers.clients.cml import cml_client_for
from workers.models import LabRecord

pytestmark = pytest.mark.django_db(transaction=True)

DRIFT_SECONDS = 1.0


@pytest.fixture
def drift_interval(settings):
    settings.LCM_DRIFT_CHECK_SECONDS = DRIFT_SECONDS
    return DRIFT_SECONDS


def ready_session(owner="cand@example.com"):
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner=owner, actor="t")
    assert poll(lambda: status_of(session) == "READY", timeout=30), status_of(session)
    return LabletSession.objects.select_related("worker", "lab_record").get(pk=session.pk)


def fresh(session):
    return LabletSession.objects.select_related("lab_record").get(pk=session.pk)


def reasons(session) -> list[str]:
    return list(session.history.order_by("at", "id").values_list("reason", flat=True))


def test_a_deleted_lab_is_found_listed_and_reinstantiated_with_the_same_ports(
    sims, sim_worker, live_loops, drift_interval, api, instructor
):
    sim_worker("w1")
    session = ready_session()
    old_lab, ports = session.cml_lab_id, dict(session.allocated_ports)
    record = session.lab_record_id
    assert ports and old_lab

    sim_control.delete(f"{sims.urls['cml']}/_sim/workers/w1/labs/{old_lab}", timeout=5).raise_for_status()

    # Within a drift interval (polled with room for a slow machine): flagged, not moved.
    assert poll(lambda: fresh(session).degraded_at is not None, timeout=drift_interval * 10)
    degraded = fresh(session)
    assert degraded.status == "READY" and f"lab {old_lab} is gone from CML" in degraded.degraded_reason
    assert any(r.startswith("degraded: its lab") for r in reasons(session))
    assert LabRecord.objects.get(pk=record).status == "ORPHANED"  # its ports kept for the re-instantiation

    items = api.get("/api/v1/attention/").json()["results"]
    drift = [i for i in items if i["kind"] == "drift"]
    assert [i["object"]["id"] for i in drift] == [str(session.pk)]
    assert drift[0]["severity"] == "critical" and "gone from CML" in drift[0]["reason"]
    page = Client()
    page.force_login(instructor)
    dashboard = page.get("/").content.decode()
    assert 'data-kind="drift"' in dashboard and f'data-object="{session.pk}"' in dashboard
    detail = page.get(f"/sessions/{session.pk}/").content.decode()
    assert 'id="degraded"' in detail and ">Re-instantiate</button>" in detail

    response = api.post(f"/api/v1/sessions/{session.pk}/reinstantiate", {"reason": "lab vanished"}, format="json")
    assert response.status_code == 200, response.content

    assert poll(lambda: fresh(session).degraded_at is None, timeout=30), fresh(session).degraded_reason
    back = fresh(session)
    assert back.status == "READY" and back.reinstantiate_requested_at is None
    assert back.cml_lab_id and back.cml_lab_id != old_lab  # a new lab ...
    assert back.allocated_ports == ports and back.lab_record.ports == ports  # ... with the same ports
    assert back.lab_record_id == record and back.lab_record.status == "BOOTED"
    assert cml_client_for(back.worker).lab_state(back.cml_lab_id) == "STARTED"
    history = reasons(session)
    assert any(r.startswith("lab vanished (its lab") for r in history)
    assert any(f"re-instantiated: fresh lab {back.cml_lab_id} (was {old_lab})" in r for r in history)
    assert not [i for i in api.get("/api/v1/attention/").json()["results"] if i["kind"] == "drift"]
    # Not flagged again by the next checks: the new lab runs.
    assert not poll(lambda: fresh(session).degraded_at is not None, timeout=drift_interval * 3)


def test_a_stopped_lab_of_a_running_session_is_reinstantiated_from_its_page(
    sims, sim_worker, live_loops, drift_interval, instructor
):
    sim_worker("w1")
    session = ready_session()
    session = session_transition(session, "RUNNING", actor="instructor", reason="Start Session")
    session = fresh(session)
    old_lab, ports = session.cml_lab_id, dict(session.allocated_ports)
    cml_client_for(session.worker).stop_lab(old_lab)  # behind LCM's back

    assert poll(lambda: fresh(session).degraded_at is not None, timeout=drift_interval * 10)
    assert f"lab {old_lab} is STOPPED in CML" in fresh(session).degraded_reason
    assert fresh(session).status == "RUNNING"

    page = Client()
    page.force_login(instructor)
    response = page.post(f"/sessions/{session.pk}/actions/reinstantiate/", {"expected": "RUNNING", "confirmed": "1"})
    assert response.status_code == 302

    assert poll(lambda: fresh(session).degraded_at is None, timeout=30)
    back = fresh(session)
    assert back.status == "RUNNING" and back.cml_lab_id != old_lab and back.allocated_ports == ports
    assert old_lab not in cml_client_for(back.worker).labs(show_all=True)  # the stopped one is gone, not leaked


def test_an_unreachable_worker_is_not_drift(sims, sim_worker, live_loops, drift_interval):
    sim_worker("w1")
    session = ready_session()
    sim_control.patch(f"{sims.urls['cml']}/_sim/workers/w1", json={"down": True}, timeout=5).raise_for_status()
    checked = fresh(session).lab_checked_at
    assert poll(lambda: fresh(session).lab_checked_at != checked, timeout=drift_interval * 10)  # it did look
    after = fresh(session)
    assert after.degraded_at is None and after.status == "READY" and after.attempts == 0
    sim_control.patch(f"{sims.urls['cml']}/_sim/workers/w1", json={"down": False}, timeout=5).raise_for_status()


def test_reinstantiate_is_refused_for_a_session_that_is_not_degraded(sims, sim_worker, live_loops, api):
    sim_worker("w1")
    session = ready_session()
    response = api.post(f"/api/v1/sessions/{session.pk}/reinstantiate", {}, format="json")
    assert response.status_code == 409
    assert "nothing to re-instantiate" in response.json()["detail"]
    assert fresh(session).reinstantiate_requested_at is None


def test_a_reinstantiation_that_died_after_its_import_went_out_is_finished_without_a_second_lab(
    sims, sim_worker, drift_interval
):
    """No loops running: the test plays the pass that crashed, then ticks by hand (`drive`)."""
    sim_worker("w1")
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="crashy", actor="t")
    drive(lambda: status_of(session) == "READY")
    session = fresh(session)
    old_lab, ports = session.cml_lab_id, dict(session.allocated_ports)
    cml = cml_client_for(session.worker)
    sim_control.delete(f"{sims.urls['cml']}/_sim/workers/w1/labs/{old_lab}", timeout=5).raise_for_status()
    assert check(fresh(session), session.lab_checked_at) == f"its lab {old_lab} is gone from CML"
    session_reinstantiate(fresh(session), actor="instructor", reason="lab vanished")

    # The pass that died: the record reset, the import sent, its answer lost.
    lab = labs.reset_for_reimport(fresh(session).lab_record, cml, actor="test")
    labs._mark_import_sent(lab)
    lost = cml.import_lab(rewritten_topology(session.definition.lab_yaml, ports), title=labs.lab_title(lab.pk))

    drive(lambda: fresh(session).degraded_at is None)
    back = fresh(session)
    assert back.status == "READY" and back.cml_lab_id == lost and back.allocated_ports == ports
    assert cml.labs(show_all=True) == [lost]  # found again by its title: no second import, nothing leaked
