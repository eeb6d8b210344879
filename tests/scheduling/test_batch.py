"""Batch placement: the in-memory Fleet decides like `choose_worker`; `sessions_schedule_batch` commits a
tick's decisions with every guarantee of `session_transition(→ SCHEDULED)`; the scheduler retries conflicts."""

import random
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from lcm.events import status_changed
from scheduling import scheduler
from scheduling.capacity import Demand, WorkerCapacity
from scheduling.placement import Fleet, choose_worker
from scheduling.scheduler import place_sessions
from scheduling.selectors import worker_capacities
from sessions.batch import sessions_schedule_batch
from sessions.models import LabletSession, SessionStatusChange
from sessions.services import session_transition
from tests.factories import DefinitionFactory, SessionFactory, WorkerFactory
from workers.models import SystemSettings

# --- Fleet: same decisions as choose_worker, fast ----------------------------------------------


def _random_fleet(rng: random.Random, size: int) -> list[WorkerCapacity]:
    shapes = [(8, 32, 200, 20), (16, 64, 400, 60), (96, 384, 1000, 250), (4, 16, 100, 20)]
    fleet = []
    for index in range(size):
        cpu, memory, storage, nodes = rng.choice(shapes)
        fleet.append(
            WorkerCapacity(
                worker_id=f"{rng.randrange(16**8):08x}-{index:04d}",
                name=f"w{index}",
                status=rng.choice(["RUNNING"] * 8 + ["DRAINING", "STOPPED"]),
                license_type=rng.choice(["ENTERPRISE"] * 6 + ["PERSONAL", "EVALUATION"]),
                cml_version=rng.choice(["2.8.1", "2.9.0", "2.10.0"]),
                cpu_total=cpu,
                memory_total=memory,
                storage_total=storage,
                nodes_total=nodes,
                ports_total=rng.choice([8000, 12, 5]),
            )
        )
    return fleet


def _random_demand(rng: random.Random) -> tuple[Demand, dict]:
    demand = Demand(
        cpu_cores=rng.choice([1, 2, 4, 8]),
        memory_gb=rng.choice([2, 4, 8, 16]),
        storage_gb=rng.choice([5, 10, 20]),
        node_count=rng.choice([1, 2, 3, 6, 22]),
        ports=rng.choice([0, 2, 3, 6]),
        license_affinity=rng.choice([(), (), ("PERSONAL",), ("ENTERPRISE",), ("EVALUATION",)]),
    )
    versions = rng.choice([{}, {}, {"cml_version_min": "2.9"}, {"cml_version_max": "2.9"}])
    return demand, versions


@pytest.mark.parametrize("seed", range(8))
def test_fleet_decides_exactly_like_choose_worker_through_claims_and_releases(seed):
    rng = random.Random(seed)
    capacities = {c.worker_id: c for c in _random_fleet(rng, 40)}
    fleet = Fleet(capacities.values())
    placed: list[tuple[str, Demand, bool]] = []
    for step in range(600):
        if placed and rng.random() < 0.3:
            worker_id, demand, reuse = placed.pop(rng.randrange(len(placed)))
            capacities[worker_id] = capacities[worker_id].claimed(demand, reuse=reuse, count=-1)
            fleet.release(worker_id, demand, reuse=reuse)
            continue
        demand, versions = _random_demand(rng)
        reusable = frozenset(rng.sample(sorted(capacities), rng.choice([0, 0, 1, 3])))
        expected = choose_worker(capacities.values(), demand, reusable_on=reusable, **versions)
        got = fleet.choose(demand, reusable_on=reusable, **versions)
        assert got == expected, f"step {step}"
        if got is not None:
            capacities[got.worker_id] = capacities[got.worker_id].claimed(demand, reuse=got.reusable_lab)
            fleet.claim(got.worker_id, demand, reuse=got.reusable_lab)
            placed.append((got.worker_id, demand, got.reusable_lab))
    assert {c.worker_id: c for c in fleet.capacities()} == capacities


def test_fleet_fills_the_fullest_then_opens_the_largest_empty_worker():
    def cap(worker_id, cpu, **used):
        return WorkerCapacity(
            worker_id=worker_id, name=worker_id, status="RUNNING", license_type="ENTERPRISE", cml_version="2.9.0",
            cpu_total=cpu, memory_total=cpu * 4, storage_total=1000, nodes_total=250, ports_total=8000, **used,
        )  # fmt: skip

    demand = Demand(2, 4, 10, 2, 2)
    fleet = Fleet([cap("a-small", 8), cap("b-large", 96), cap("c-medium", 16, cpu_used=14, memory_used=8)])
    assert fleet.choose(demand).worker_id == "c-medium"  # in use and fullest
    fleet.claim("c-medium", demand)
    assert fleet.choose(demand).worker_id == "b-large"  # the medium is full: open the largest empty worker
    fleet.refresh([cap("c-medium", 16)])
    assert fleet.choose(demand).worker_id == "b-large"  # equally empty: the larger wins


# --- sessions_schedule_batch --------------------------------------------------------------------


@pytest.fixture
def published():
    seen = []

    def receiver(sender, **payload):
        seen.append((payload["id"], payload["from_status"], payload["to_status"], payload["actor"]))

    status_changed.connect(receiver, dispatch_uid="test-batch")
    yield seen
    status_changed.disconnect(dispatch_uid="test-batch")


@pytest.mark.django_db
def test_a_batch_places_sessions_with_history_and_publishes_after_commit(published, django_capture_on_commit_callbacks):
    definition = DefinitionFactory(cpu_cores=2, memory_gb=4, storage_gb=10)
    first, second = WorkerFactory(), WorkerFactory()
    sessions = [SessionFactory(definition=definition, attempts=2, last_error="x") for _ in range(3)]
    assignments = [
        (sessions[0].pk, first.pk, "placed on first"),
        (sessions[1].pk, second.pk, "placed on second"),
        (sessions[2].pk, first.pk, "placed on first too"),
    ]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        outcome = sessions_schedule_batch(assignments, actor="scheduler")
    assert outcome.placed == [(str(s.pk), str(w.pk)) for s, w in zip(sessions, (first, second, first), strict=True)]
    assert outcome.refused == [] and outcome.stale_workers == set()
    for session, worker, (_, _, reason) in zip(sessions, (first, second, first), assignments, strict=True):
        session.refresh_from_db()
        assert (session.status, session.worker_id) == ("SCHEDULED", worker.pk)
        assert session.scheduled_at is not None and session.status_changed_at == session.scheduled_at
        assert (session.attempts, session.last_error, session.next_attempt_at) == (0, "", None)
        change = SessionStatusChange.objects.get(session=session, to_status="SCHEDULED")
        assert (change.from_status, change.actor, change.reason) == ("PENDING", "scheduler", reason)
    announcements = [c for c in callbacks if "publish_changes" in c.__qualname__]
    assert len(announcements) == 1  # one announcement for the batch, one status_changed per session in it
    # and, whatever the batch's size, one bump of the live pages' change stamps (lcm.live) and one count of the
    # transitions for /metrics (lcm.metrics)
    assert sorted(c.__module__ for c in callbacks) == ["lcm.events", "lcm.live", "lcm.metrics"]
    assert sorted(published) == sorted((str(s.pk), "PENDING", "SCHEDULED", "scheduler") for s in sessions)
    assert worker_capacities([first.pk])[str(first.pk)].cpu_used == 4


@pytest.mark.django_db
def test_a_full_worker_refuses_the_rest_and_nothing_changes_for_them():
    definition = DefinitionFactory(cpu_cores=4, memory_gb=4, storage_gb=4)
    worker = WorkerFactory(cpu_cores=8)
    SessionFactory(definition=definition, status="RUNNING", worker=worker)  # 4 of 8 CPUs already held
    small = DefinitionFactory(cpu_cores=1, memory_gb=1, storage_gb=1)
    big_one, big_two, tiny = (
        SessionFactory(definition=definition),
        SessionFactory(definition=definition),
        SessionFactory(definition=small),
    )
    outcome = sessions_schedule_batch(
        [(big_one.pk, worker.pk, ""), (big_two.pk, worker.pk, ""), (tiny.pk, worker.pk, "")], actor="scheduler"
    )
    # Claimed in order: the first big one fills the worker, the second is refused, the tiny one no longer fits.
    assert [p[0] for p in outcome.placed] == [str(big_one.pk)]
    refused = {r[0]: r[2] for r in outcome.refused}
    assert "not enough cpu" in refused[str(big_two.pk)] and "not enough cpu" in refused[str(tiny.pk)]
    assert outcome.stale_workers == {str(worker.pk)}
    for session in (big_two, tiny):
        session.refresh_from_db()
        assert session.status == "PENDING" and session.worker_id is None
        assert not SessionStatusChange.objects.filter(session=session, to_status="SCHEDULED").exists()
    assert worker_capacities([worker.pk])[str(worker.pk)].cpu_used == 8


@pytest.mark.django_db
def test_refusals_for_moved_sessions_workers_not_running_and_duplicates():
    running, draining = WorkerFactory(), WorkerFactory(status="DRAINING")
    terminated = SessionFactory(status="TERMINATED")
    on_draining, twice = SessionFactory(), SessionFactory()
    outcome = sessions_schedule_batch(
        [
            (terminated.pk, running.pk, ""),
            (on_draining.pk, draining.pk, ""),
            (twice.pk, running.pk, ""),
            (twice.pk, running.pk, ""),
        ],
        actor="scheduler",
    )
    assert outcome.placed == [(str(twice.pk), str(running.pk))]
    reasons = [why for _, _, why in outcome.refused]
    assert reasons[0] == "assigned twice in one batch"
    assert "no longer PENDING" in reasons[1] and "DRAINING, not RUNNING" in reasons[2]
    assert outcome.stale_workers == {str(draining.pk)}
    terminated.refresh_from_db()
    assert terminated.status == "TERMINATED" and terminated.worker_id is None


@pytest.mark.django_db
def test_a_batch_costs_the_same_queries_whatever_its_size():
    definition = DefinitionFactory(cpu_cores=1, memory_gb=1, storage_gb=1)
    workers = [WorkerFactory() for _ in range(4)]

    def count(n: int) -> int:
        sessions = [SessionFactory(definition=definition) for _ in range(n)]
        assignments = [(s.pk, workers[i % len(workers)].pk, "") for i, s in enumerate(sessions)]
        with CaptureQueriesContext(connection) as captured:
            assert len(sessions_schedule_batch(assignments, actor="t").placed) == n
        return len(captured.captured_queries)

    assert count(2) == count(40) <= 10


def _race(*targets):
    """Run the callables at once in threads (each with its own connection); returns their results."""
    barrier = threading.Barrier(len(targets))
    results, errors = [None] * len(targets), []

    def run(index, target):
        try:
            barrier.wait()
            results[index] = target()
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return results


@pytest.mark.django_db(transaction=True)
def test_racing_batches_never_overbook_nor_place_a_session_twice():
    definition = DefinitionFactory(cpu_cores=4, memory_gb=4, storage_gb=4)
    workers = [WorkerFactory(cpu_cores=8) for _ in range(3)]  # room for 6 sessions
    sessions = [SessionFactory(definition=definition) for _ in range(12)]
    rng = random.Random(7)

    def batch(order):
        # Each racer sends every session, onto workers in its own order (overlapping both ways).
        return sessions_schedule_batch(
            [(s.pk, workers[(i + order) % 3].pk, f"racer {order}") for i, s in enumerate(rng.sample(sessions, 12))],
            actor=f"scheduler-{order}",
        )

    outcomes = _race(lambda: batch(0), lambda: batch(1), lambda: batch(2))
    placed = [p for outcome in outcomes for p in outcome.placed]
    assert len(placed) == 6
    assert len({session_id for session_id, _ in placed}) == 6  # no session placed twice
    capacities = worker_capacities([w.pk for w in workers])
    assert all(c.cpu_used <= c.cpu_total for c in capacities.values())
    assert LabletSession.objects.filter(status="SCHEDULED").count() == 6
    assert SessionStatusChange.objects.filter(to_status="SCHEDULED").count() == 6


@pytest.mark.django_db(transaction=True)
def test_a_batch_racing_single_transitions_never_overbooks():
    definition = DefinitionFactory(cpu_cores=4, memory_gb=4, storage_gb=4)
    worker = WorkerFactory(cpu_cores=16)  # room for 4 sessions
    batch_sessions = [SessionFactory(definition=definition) for _ in range(4)]
    single_sessions = [SessionFactory(definition=definition) for _ in range(4)]

    def singles():
        placed = 0
        for session in single_sessions:
            try:
                session_transition(session, "SCHEDULED", actor="manual", worker=worker.pk)
                placed += 1
            except Exception:  # refused: the worker is full
                pass
        return placed

    def batch():
        return len(sessions_schedule_batch([(s.pk, worker.pk, "") for s in batch_sessions], actor="t").placed)

    results = _race(singles, batch)
    assert sum(results) == 4
    assert worker_capacities([worker.pk])[str(worker.pk)].cpu_used == 16


# --- the scheduler around it --------------------------------------------------------------------


@pytest.mark.django_db
def test_the_scheduler_re_reads_a_stale_worker_and_places_elsewhere(monkeypatch):
    definition = DefinitionFactory(cpu_cores=4, memory_gb=4, storage_gb=4)
    fullest = WorkerFactory(name="fullest", cpu_cores=8)
    other = WorkerFactory(name="other", cpu_cores=8)
    SessionFactory(definition=definition, status="RUNNING", worker=fullest)
    # Another scheduler fills `fullest` after this one read the capacities.
    stale = worker_capacities()
    SessionFactory(definition=definition, status="SCHEDULED", worker=fullest)
    reads = iter([stale])
    real = scheduler.worker_capacities
    monkeypatch.setattr(scheduler, "worker_capacities", lambda ids=None: next(reads, None) or real(ids))
    session = SessionFactory(definition=definition)
    report = place_sessions(scheduler.eligible_sessions())
    assert report.conflicts == 1
    assert report.placed == [(str(session.pk), "other")]
    session.refresh_from_db()
    assert session.worker_id == other.pk


@pytest.mark.django_db
def test_a_tick_costs_the_same_queries_for_few_and_many_sessions():
    from lcm import coordination

    coordination._coordinator = coordination.InProcessCoordinator()
    SystemSettings.load()  # created on first use: not part of a tick's cost
    definitions = [DefinitionFactory(cpu_cores=1, memory_gb=1, storage_gb=1) for _ in range(2)]
    for _ in range(5):
        WorkerFactory()

    def tick(n: int) -> int:
        for i in range(n):
            SessionFactory(definition=definitions[i % 2], timeslot_start=timezone.now() + timedelta(minutes=1))
        with CaptureQueriesContext(connection) as captured:
            assert len(scheduler.place_pending(require_leader=False).placed) == n
        return len(captured.captured_queries)

    try:
        assert tick(2) == tick(60)
    finally:
        coordination.reset_coordinator()


@pytest.mark.django_db
def test_a_placed_batch_is_announced_once_and_projected_with_one_query(monkeypatch, django_capture_on_commit_callbacks):
    """The after-commit work of a tick does not grow with its size in queries: one announcement for the
    batch, whose projection reads every placed session in one SELECT and writes etcd in chunks."""
    from lcm import coordination, projection
    from lcm.events import changes_committed

    coord = coordination.InProcessCoordinator()
    monkeypatch.setattr(coordination, "_coordinator", coord)
    batches = []
    changes_committed.connect(
        lambda sender, changes, **kw: batches.append(changes), dispatch_uid="test-once", weak=False
    )
    projection.connect()
    try:
        definition = DefinitionFactory(cpu_cores=1, memory_gb=1, storage_gb=1)
        worker = WorkerFactory(cpu_cores=200, memory_gb=200, storage_gb=200, max_nodes=1000)
        sessions = [SessionFactory(definition=definition) for _ in range(150)]
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            sessions_schedule_batch([(s.pk, worker.pk, "placed") for s in sessions], actor="scheduler")
        (announce,) = [c for c in callbacks if "publish_changes" in c.__qualname__]
        (stamps,) = [c for c in callbacks if c.__module__ == "lcm.live"]  # the live pages' change stamps
        with CaptureQueriesContext(connection) as queries:
            announce()
        with CaptureQueriesContext(connection) as stamp_queries:
            stamps()
    finally:
        projection.disconnect()
        changes_committed.disconnect(dispatch_uid="test-once")
    assert len(batches) == 1 and {c["id"] for c in batches[0]} == {str(s.pk) for s in sessions}
    assert len(queries) == 1
    assert len(stamp_queries) == 2  # the sessions' exams, one upsert of every scope: not one per session
    assert all(coord.get(coordination.session_status_key(s.pk)) == "SCHEDULED" for s in sessions)
