"""Racing transitions on one session over real PostgreSQL: exactly one wins, the rest are refused."""

import threading

import pytest
from django.db import connection

from lcm.fsm import InvalidTransition
from sessions.models import LabletSession, SessionStatusChange
from sessions.services import session_transition
from tests.factories import SessionFactory, UserSessionFactory, WorkerFactory

THREADS = 50


def _race(session_pk, targets, **kwargs):
    """Run one transition per target in its own thread and connection, all released at once."""
    barrier = threading.Barrier(len(targets))
    outcomes: list = [None] * len(targets)

    def attempt(index, target):
        try:
            barrier.wait()
            session_transition(session_pk, target, actor=f"thread-{index}", reason="race", **kwargs)
            outcomes[index] = "won"
        except InvalidTransition:
            outcomes[index] = "refused"
        except Exception as exc:  # anything else is a bug the test must show
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_fifty_conflicting_transitions_exactly_one_wins():
    session = UserSessionFactory(lablet_session__status="READY", lablet_session__worker=WorkerFactory()).lablet_session
    targets = [("RUNNING", "EXPIRED", "TERMINATED")[i % 3] for i in range(THREADS)]
    outcomes = _race(session.pk, targets, expected_status="READY")
    assert [o for o in outcomes if not isinstance(o, str)] == []
    assert outcomes.count("won") == 1
    assert outcomes.count("refused") == THREADS - 1
    session = LabletSession.objects.get(pk=session.pk)
    assert session.status == targets[outcomes.index("won")]
    assert SessionStatusChange.objects.filter(session=session, entity="session").count() == 1


@pytest.mark.django_db(transaction=True)
def test_fifty_identical_transitions_exactly_one_wins():
    session = SessionFactory(status="RUNNING", worker=WorkerFactory())
    outcomes = _race(session.pk, ["COLLECTING"] * THREADS)
    assert outcomes.count("won") == 1
    assert outcomes.count("refused") == THREADS - 1
    assert LabletSession.objects.get(pk=session.pk).status == "COLLECTING"
    assert SessionStatusChange.objects.filter(session=session).count() == 1
