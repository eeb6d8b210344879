"""The embedded default's loop runner: ticks + after-commit wake-ups + the in-process pool, no Celery, no etcd."""

import pytest

from lcm import coordination
from sessions.booking import session_create
from sessions.services import session_transition
from tests.factories import DefinitionFactory
from tests.support.loops import status_of
from tests.support.waiting import poll


def _wait(condition, seconds=30.0):
    return poll(condition, timeout=seconds, interval=0.1)


@pytest.mark.django_db(transaction=True)
def test_sessions_move_by_themselves_to_ready_and_finish_after_manual_moves(sims, sim_worker, live_loops):
    sim_worker("w1")
    definition = DefinitionFactory(boot_lead_minutes=30, grading_enabled=False)
    session = session_create(definition=definition, owner="embedded@example.com", actor="test")
    assert _wait(lambda: status_of(session) == "READY"), status_of(session)
    # The projection mirrors the session's status while it is active.
    assert coordination.coordinator().get(coordination.session_status_key(session.pk)) == "READY"
    session_transition(session, "RUNNING", actor="instructor")
    session_transition(session, "STOPPING", actor="instructor")
    assert _wait(lambda: status_of(session) == "ARCHIVED"), status_of(session)
    assert coordination.coordinator().get(coordination.session_status_key(session.pk)) is None


@pytest.mark.django_db
def test_a_tick_records_its_heartbeat_and_the_scheduler_page_shows_it(monkeypatch):
    from lcm import loops
    from lcm.loops import loop_health
    from lcm.models import LoopHeartbeat

    monkeypatch.setattr(coordination, "_coordinator", coordination.InProcessCoordinator())
    assert loops.tick("lablets") == []
    loops.tick("lablets")
    beat = LoopHeartbeat.objects.get(name="lablets")
    assert beat.ticks == 2 and beat.last_error == ""
    rows = {row["name"]: row for row in loop_health()}
    assert rows["lablets"]["state"] == "ok"
    assert rows["placement"]["state"] == "no tick reported"
