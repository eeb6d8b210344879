"""A timed exam (SPEC §3.4, §3.4a): extra time reaches the candidate in LDS, access ends when RUNNING is left,
and the candidate's user session ends the way the session did. Through the real reconciler and the simulators."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from grading.models import GradingSession
from sessions.booking import session_create, session_extend
from sessions.candidate import lds_end_of
from sessions.clients.lds import lds_client
from sessions.models import LabletSession
from sessions.reconcilers import reconcile_session, sessions_needing_work
from sessions.services import session_terminate, session_transition
from tests.factories import DefinitionFactory
from tests.support.loops import drive, status_of
from tests.support.simulators import sim_control
from workers.models import SystemSettings

pytestmark = pytest.mark.django_db(transaction=True)


def _lds_session(session) -> dict:
    return lds_client().get_session(LabletSession.objects.get(pk=session.pk).user_session.lds_session_id)


def _lds_end(session):
    return lds_end_of(_lds_session(session))


def _running(sims, definition, *, minutes=30):
    """A session of `definition` READY, its candidate logged in to LDS, then RUNNING."""
    start = timezone.now()
    session = session_create(
        definition=definition, owner="cand@example.com", actor="t",
        timeslot_start=start, timeslot_end=start + timedelta(minutes=minutes),
    )  # fmt: skip
    drive(lambda: status_of(session) == "READY")
    lds_id = LabletSession.objects.get(pk=session.pk).user_session.lds_session_id
    sim_control.post(f"{sims.urls['lds']}/_sim/sessions/{lds_id}/login", timeout=5).raise_for_status()
    # No web server takes LDS's `running` CloudEvent here: the instructor's Start does what it would.
    return session_transition(session, "RUNNING", actor="instructor", reason="Start Session")


def _advance_lds(sims, seconds: float) -> None:
    sim_control.post(f"{sims.urls['lds']}/_sim/clock", json={"advance": seconds}, timeout=5).raise_for_status()


def test_an_extension_of_a_running_session_reaches_lds_and_the_candidate_keeps_working(sims, sim_worker):
    sim_worker("w1")
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30, max_duration_minutes=30, grading_enabled=False))
    old_end = session.timeslot_end
    assert abs((_lds_end(session) - old_end).total_seconds()) < 1  # LDS was told the end at create

    session = session_extend(session, old_end + timedelta(minutes=10), actor="instructor", reason="fire alarm")

    assert session.pk in sessions_needing_work()  # the tick would find it too
    reconcile_session(session.pk)  # one pass
    new_end = _lds_end(session)
    assert timedelta(0) <= new_end - session.timeslot_end < timedelta(minutes=1)
    assert session.pk not in sessions_needing_work()  # converged: no more passes for it
    notes = list(session.history.order_by("at").values_list("actor", "reason"))
    assert any(actor == "instructor" and "fire alarm" in reason for actor, reason in notes)
    assert any(actor == "lablet-reconciler" and reason.startswith("LDS end moved to") for actor, reason in notes)

    # Past the old end, before the new one: the candidate is still working in LDS.
    _advance_lds(sims, (old_end - timezone.now()).total_seconds() + 60)
    assert _lds_session(session)["state"] == "SESSION_RUNNING"
    _advance_lds(sims, 10 * 60)
    assert _lds_session(session)["state"] == "SESSION_TIMEOUT"  # and cut off at the new one


def test_the_rest_extend_of_a_running_session_reaches_lds_too(sims, sim_worker, django_user_model):
    from django.contrib.auth.models import Group

    from lcm.roles import INSTRUCTOR_GROUP
    from tests.api.conftest import client_for

    sim_worker("w1")
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30, grading_enabled=False))
    user = django_user_model.objects.create_user("proctor", "p@example.com", "proctor-pass")
    user.groups.add(Group.objects.get_or_create(name=INSTRUCTOR_GROUP)[0])
    new_end = session.timeslot_end + timedelta(minutes=10)
    response = client_for(user).post(
        f"/api/v1/sessions/{session.pk}/extend", {"timeslot_end": new_end.isoformat(), "reason": "network outage"}
    )
    assert response.status_code == 200, response.content
    reconcile_session(session.pk)
    assert timedelta(0) <= _lds_end(session) - new_end < timedelta(minutes=1)
    assert session.history.filter(actor="proctor", reason__contains="network outage").exists()


def test_an_instructor_extends_up_to_the_ceiling_and_an_admin_beyond_with_a_reason(sims, sim_worker):
    sim_worker("w1")
    SystemSettings.objects.update_or_create(pk=1, defaults={"max_extension_minutes": 15})
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30, max_duration_minutes=30, grading_enabled=False))
    start = session.timeslot_start

    with pytest.raises(ValidationError) as refused:
        session_extend(session, start + timedelta(minutes=50), actor="instructor")
    assert "at most 45" in str(refused.value.message_dict["timeslot_end"])
    assert LabletSession.objects.get(pk=session.pk).timeslot_end == session.timeslot_end  # nothing changed

    with pytest.raises(ValidationError) as no_reason:
        session_extend(session, start + timedelta(minutes=50), actor="admin", is_admin=True)
    assert "needs a reason" in str(no_reason.value.message_dict["reason"])

    session_extend(session, start + timedelta(minutes=45), actor="instructor")  # the ceiling itself is allowed
    extended = session_extend(session, start + timedelta(minutes=50), actor="admin", is_admin=True, reason="medical")
    assert extended.timeslot_end == start + timedelta(minutes=50)


def test_collecting_and_later_states_cannot_be_extended(sims, sim_worker):
    sim_worker("w1")
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30, grading_enabled=False))
    session_transition(session, "STOPPING", actor="instructor")
    with pytest.raises(Exception, match="cannot be extended"):
        session_extend(session, session.timeslot_end + timedelta(minutes=5), actor="instructor")


def test_finish_ends_the_candidates_access_before_grading_starts_and_the_user_session_ends_normally(sims, sim_worker):
    sim_worker("w1")
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30))
    assert session.user_session.status == "ACTIVE"

    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    reconcile_session(session.pk)

    ended = _lds_session(session)
    assert ended["state"] == "SESSION_USER_FINISHED"  # the console is closed to the candidate
    user_session = LabletSession.objects.get(pk=session.pk).user_session
    assert user_session.status == "ENDED"
    finished = session.history.get(entity="user_session", to_status="ENDED").at
    grading = GradingSession.objects.get(lablet_session=session)
    assert finished <= grading.created_at  # access ended before the grading session existed

    drive(lambda: status_of(session) == "ARCHIVED")
    session.refresh_from_db()
    assert session.user_session.status == "ENDED" and not session.cleanup_pending


def test_a_manually_started_session_makes_its_user_session_active(sims, sim_worker):
    sim_worker("w1")
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="m", actor="t")
    drive(lambda: status_of(session) == "READY")
    session_transition(session, "RUNNING", actor="instructor", reason="Start Session")
    assert LabletSession.objects.get(pk=session.pk).user_session.status == "ACTIVE"


def test_an_archived_session_cannot_be_terminated_and_keeps_how_it_ended(sims, sim_worker):
    sim_worker("w1")
    session = session_create(
        definition=DefinitionFactory(boot_lead_minutes=30, grading_enabled=False), owner="z", actor="t"
    )
    drive(lambda: status_of(session) == "READY")
    session_transition(session, "RUNNING", actor="t")
    session_transition(session, "STOPPING", actor="t")
    drive(lambda: status_of(session) == "ARCHIVED")

    with pytest.raises(Exception, match="ARCHIVED session is finished") as refused:
        session_terminate(session, actor="admin", reason="oops")
    assert refused.value.allowed == []
    session.refresh_from_db()
    assert (session.status, session.end_reason) == ("ARCHIVED", "COMPLETED")


def test_an_expired_session_that_held_a_lab_ends_archived_with_no_pending_teardown(sims, sim_worker):
    sim_worker("w1")
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="e", actor="t")
    drive(lambda: status_of(session) == "READY")
    past = timezone.now() - timedelta(seconds=1)
    LabletSession.objects.filter(pk=session.pk).update(timeslot_start=past - timedelta(minutes=5), timeslot_end=past)
    drive(lambda: status_of(session) == "ARCHIVED")
    session.refresh_from_db()
    assert session.end_reason == "EXPIRED" and not session.cleanup_pending


# --- grading modes and the review hold (SPEC §3.4) -------------------------------------------------


def test_manual_grading_waits_in_collecting_for_an_instructor_then_grades(sims, sim_worker):
    sim_worker("w1")
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30, grading_mode="manual"))
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    result = reconcile_session(session.pk)
    assert result.action == "waiting for an instructor: Start Grading or Skip Grading"
    for _ in range(3):  # later passes leave it there too
        reconcile_session(session.pk)
    assert status_of(session) == "COLLECTING" and not GradingSession.objects.filter(lablet_session=session).exists()
    session_transition(session, "GRADING", actor="instructor", reason="Start Grading")
    drive(lambda: status_of(session) == "ARCHIVED")
    assert LabletSession.objects.get(pk=session.pk).grade_result in ("PASS", "FAIL")


def test_mode_none_goes_from_running_to_teardown_without_grading(sims, sim_worker):
    sim_worker("w1")
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30, grading_mode="none"))
    assert session.definition.grading_enabled is False
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: status_of(session) == "ARCHIVED")
    assert not GradingSession.objects.filter(lablet_session=session).exists()


def test_a_graded_session_keeps_its_stopped_lab_for_review_then_archives_at_the_deadline(sims, sim_worker):
    sim_worker("w1")
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30, hold_for_review_hours=2))
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: status_of(session) == "STOPPED")
    held = LabletSession.objects.get(pk=session.pk)
    assert held.hold_until - timezone.now() > timedelta(hours=1, minutes=59)
    assert held.lab_record.status == "STOPPED" and held.lab_record.active_session_id == held.pk  # kept, not wiped
    assert held.pk not in sessions_needing_work()  # nothing to do until the deadline
    assert reconcile_session(held.pk).action == "held for review"

    LabletSession.objects.filter(pk=held.pk).update(hold_until=timezone.now() - timedelta(seconds=1))
    drive(lambda: status_of(session) == "ARCHIVED")
    archived = LabletSession.objects.get(pk=session.pk)
    assert archived.lab_record.status == "WIPED" and archived.lab_record.active_session_id is None


def test_archive_ends_a_review_hold_and_the_loop_wipes_then_archives(sims, sim_worker):
    from sessions.services import session_end_hold

    sim_worker("w1")
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30, hold_for_review_hours=2))
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: status_of(session) == "STOPPED")
    with pytest.raises(Exception, match="held for review"):  # a plain move would leave the kept lab behind
        session_transition(session, "ARCHIVED", actor="instructor")
    session_end_hold(session, actor="instructor")
    drive(lambda: status_of(session) == "ARCHIVED")
    assert LabletSession.objects.get(pk=session.pk).lab_record.status == "WIPED"


def test_terminating_a_held_session_tears_its_kept_lab_down(sims, sim_worker):
    sim_worker("w1")
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30, hold_for_review_hours=2))
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: status_of(session) == "STOPPED")
    terminated = session_terminate(session, actor="admin", reason="done reviewing")
    assert terminated.cleanup_pending
    drive(lambda: not LabletSession.objects.get(pk=session.pk).cleanup_pending)
    assert LabletSession.objects.get(pk=session.pk).lab_record.status in ("WIPED", "DELETED")


# --- leaving GRADING by hand closes the grading and releases the engine (SPEC §3.4) ----------------------


def _grading_started(sims, sim_worker):
    from grading.clients.grading_engine import grading_client

    sim_worker("w1")
    sim_control.post(f"{sims.urls['grading']}/_sim/grading/outcomes", json={"outcome": "hang"}, timeout=5)
    session = _running(sims, DefinitionFactory(boot_lead_minutes=30))
    session_transition(session, "COLLECTING", actor="instructor", reason="Finish Session")
    drive(lambda: GradingSession.objects.filter(lablet_session=session).exclude(grading_session_id="").exists())
    grading = GradingSession.objects.get(lablet_session=session)
    part = grading_client().get_session(grading.grading_session_id)["parts"][0]
    assert part.get("pod"), "the engine reaches the lab through its pod while grading"
    return LabletSession.objects.get(pk=session.pk), grading


def _engine_parts(grading) -> list:
    from grading.clients.grading_engine import grading_client

    return grading_client().get_session(grading.grading_session_id)["parts"]


@pytest.mark.parametrize("how", ["complete", "terminate"])
def test_leaving_grading_by_hand_closes_the_grading_and_releases_the_engine_session(sims, sim_worker, how):
    session, grading = _grading_started(sims, sim_worker)
    assert status_of(session) == "GRADING"
    if how == "complete":
        session_transition(session, "STOPPING", actor="instructor", reason="grading completed by hand")
    else:
        session_terminate(session, actor="instructor", reason="candidate left")
    grading.refresh_from_db()
    assert grading.status == "FAULTED" and grading.error_message.startswith("closed: ")
    assert grading.release_pending

    drive(lambda: not GradingSession.objects.get(pk=grading.pk).release_pending)
    grading.refresh_from_db()
    assert grading.engine_released_at is not None
    assert _engine_parts(grading) == []  # its grading stopped, its pod dropped: the engine no longer reaches the lab
    drive(lambda: status_of(session) in ("ARCHIVED", "TERMINATED") and not LabletSession.objects.get(
        pk=session.pk).cleanup_pending)  # fmt: skip
