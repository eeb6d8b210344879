"""The worker reconciler (`workers/reconcilers.py`), one handler at a time: `reconcile_worker` for a worker in
each status, against moto (EC2, server mode) and the CML simulator, both in this process on free ports.

Each test asserts the worker's resulting status and desired status, the history rows the pass wrote (actor
`worker-reconciler`, their reason) and the `Result` it returned. Time runs on the simulators' clocks: an
instance stays `pending` (`stopping`, `shutting-down`) until moto's clock passes its timing, and a new
virtual CML answers `ready: false` until its warm-up has passed on the CML simulator's clock. The session
steps of a worker going away belong to the lablet reconciler: the last tests show that `reconcile_worker`
writes no session and that `reconcile_session` then moves them.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from lcm import http
from sessions.models import LabletSession
from sessions.reconcilers import reconcile_session
from simulators.runner import start_simulators
from tests.factories import LabRecordFactory, SessionFactory, TemplateFactory, WorkerFactory
from tests.support.simulators import SIM_TOKEN, sim_control
from workers.clients.cml import forget_tokens
from workers.clients.ec2 import TAG_WORKER_ID, ec2_client
from workers.models import CMLWorker, Port, SystemSettings
from workers.reconcilers import (
    ACTOR,
    POLL_SECONDS,
    project_workers,
    reconcile_worker,
    record_failure,
    workers_needing_work,
)
from workers.services import worker_drain

pytestmark = pytest.mark.django_db

BOOT_SECONDS = 30  # moto: pending → running
STOP_SECONDS = 10  # moto: stopping → stopped, shutting-down → terminated
WARMUP_SECONDS = 60  # CML simulator: a new virtual CML answers `ready: false` this long


@pytest.fixture(scope="module")
def servers():
    """The CML simulator with a real warm-up (driven by its clock), moto at zero delay (timings set per test)."""
    cml = start_simulators(
        control_token=SIM_TOKEN,
        cml_port=0,
        only=["cml"],
        timings={"cml": {"warmup": WARMUP_SECONDS, "node_queue": 0, "node_boot": 0}},
    )
    moto = start_simulators(control_token=SIM_TOKEN, moto_port=0, zero_delay=True, only=["moto"])
    yield cml.urls | moto.urls
    cml.stop()
    moto.stop()


def sim(urls, name: str, method: str, path: str, **kwargs):
    response = sim_control.request(method, f"{urls[name]}/_sim/{path}", timeout=10, **kwargs)
    response.raise_for_status()
    return response.json()


@pytest.fixture
def env(servers, settings):
    """Fresh simulators, settings pointing at them, and one template."""
    for name in ("cml", "moto"):
        sim(servers, name, "POST", "reset")
    sim(
        servers, "moto", "POST", "timings", json={"boot": BOOT_SECONDS, "stop": STOP_SECONDS, "terminate": STOP_SECONDS}
    )
    settings.LCM_AWS_ENDPOINT_URL = servers["moto"]
    settings.LCM_CML_SIMULATOR_URL = servers["cml"]
    settings.LCM_CML_URL_TEMPLATE = ""
    settings.LCM_HTTP_READ_TIMEOUT = 5.0
    settings.LCM_HTTP_RETRIES = 1
    forget_tokens()
    template = TemplateFactory(name="reconciler-small", instance_type="m5.2xlarge", ami_name_pattern="cml-2.9*")

    class Env:
        urls = servers

        def advance(self, name: str, seconds: float) -> None:
            sim(servers, name, "POST", "clock", json={"advance": seconds})

        def with_instance(self, worker, state: str = "running") -> CMLWorker:
            """`worker` with an instance tagged for it as a launch leaves one, pinned to `state`."""
            image = ec2_client().find_images("cml-2.9*")[0]
            launched = ec2_client().run_instance(
                image_id=image.id, instance_type="m5.2xlarge", name=worker.name, worker_id=str(worker.pk)
            )
            sim(servers, "moto", "POST", f"instances/{launched.id}/state", json={"state": state})
            CMLWorker.objects.filter(pk=worker.pk).update(aws_instance_id=launched.id)
            return reload(worker)

        def instance_state(self, instance_id: str) -> str:
            return ec2_client().describe_instance(instance_id).state.value

        def ready_cml(self, worker_name: str) -> str:
            sim(servers, "cml", "POST", "workers", json={"name": worker_name, "warmup": 0})
            return f"{servers['cml']}/w/{worker_name}"

    Env.template = template
    return Env()


def reload(worker) -> CMLWorker:
    return CMLWorker.objects.get(pk=worker.pk)


def moves(worker, since: int = 0) -> list[tuple[str, str, str, str]]:
    """(field, from, to, actor) of the worker's history rows, oldest first, from the `since`-th on."""
    rows = worker.history.order_by("at", "id")[since:]
    return [(h.field, h.from_status, h.to_status, h.actor) for h in rows]


def reasons(worker) -> list[str]:
    return list(worker.history.order_by("at", "id").values_list("reason", flat=True))


def session_rows(worker) -> list[dict]:
    """Everything stored of the sessions on `worker`, and their history: to compare before and after a pass."""
    sessions = list(LabletSession.objects.filter(worker=worker).order_by("pk").values())
    history = [list(s.history.values()) for s in LabletSession.objects.filter(worker=worker).order_by("pk")]
    return [sessions, history]


# --- PENDING ------------------------------------------------------------------------------------


def test_pending_launches_a_tagged_instance_moves_to_provisioning_and_asks_for_the_next_pass(env):
    worker = WorkerFactory(name="p1", status="PENDING", template=env.template, cml_base_url="")

    result = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status) == ("PROVISIONING", "RUNNING")
    assert worker.aws_instance_id and worker.instance_type == "m5.2xlarge" and worker.service_status == "PROVISIONING"
    assert moves(worker) == [("status", "PENDING", "PROVISIONING", ACTOR)]
    assert ACTOR == "worker-reconciler"
    [launched] = reasons(worker)
    assert launched.startswith(f"launched instance {worker.aws_instance_id} (m5.2xlarge) from cml-2.9")
    assert (result.action, result.requeue_after) == ("provisioning", 0)  # no fall-through into PROVISIONING's
    [instance] = ec2_client().describe_instances(tags={TAG_WORKER_ID: str(worker.pk)})
    assert instance.id == worker.aws_instance_id


def test_pending_without_a_template_fails_saying_so(env):
    SystemSettings.objects.update_or_create(pk=1, defaults={"default_worker_template": None})
    worker = WorkerFactory(name="p2", status="PENDING", template=None, cml_base_url="")

    result = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status) == ("FAILED", "RUNNING")
    assert moves(worker) == [("status", "PENDING", "FAILED", ACTOR)]
    assert reasons(worker) == ["no template to launch from"]
    assert worker.last_error == "the worker has no template and no default"
    assert (result.action, result.requeue_after) == ("failed", None)


# --- PROVISIONING --------------------------------------------------------------------------------


def test_provisioning_moves_to_starting_once_ec2_knows_the_instance(env):
    worker = env.with_instance(WorkerFactory(name="v1", status="PROVISIONING", cml_base_url=""), "pending")

    result = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status) == ("STARTING", "RUNNING")
    assert moves(worker) == [("status", "PROVISIONING", "STARTING", ACTOR)]
    assert reasons(worker) == ["instance pending"]
    assert worker.private_ip  # the addresses EC2 gave it
    assert (result.action, result.requeue_after) == ("starting", 0)

    waiting = reconcile_worker(worker.pk)  # STARTING's handler, in the next pass

    assert reload(worker).status == "STARTING"
    assert (waiting.action, waiting.requeue_after) == ("instance pending", POLL_SECONDS)


# --- STARTING ------------------------------------------------------------------------------------


def test_starting_waits_at_the_readiness_gate_then_becomes_running(env):
    worker = env.with_instance(WorkerFactory(name="s1", status="STARTING", cml_base_url=""))

    waiting = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert worker.status == "STARTING" and worker.service_status == "BOOTING"
    assert worker.cml_base_url == f"{env.urls['cml']}/w/s1"  # its virtual CML, created and warming up
    assert moves(worker) == []
    assert (waiting.action, waiting.requeue_after) == (
        "waiting for CML: system_information.ready is false",
        POLL_SECONDS,
    )

    env.advance("cml", WARMUP_SECONDS)
    ready = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status, worker.service_status) == ("RUNNING", "RUNNING", "READY")
    assert moves(worker) == [("status", "STARTING", "RUNNING", ACTOR)]
    assert reasons(worker) == ["CML 2.9.0 ready"]
    assert (ready.action, ready.requeue_after) == ("running", 0)

    synced = reconcile_worker(worker.pk)  # RUNNING's handler, in the next pass: the first sync

    assert reload(worker).metrics_collected_at is not None
    assert (synced.action, synced.requeue_after) == ("in sync", None)


# --- RUNNING -------------------------------------------------------------------------------------


def test_running_in_sync_collects_metrics_and_writes_no_history(env):
    worker = env.with_instance(WorkerFactory(name="r1", status="RUNNING", cml_base_url=env.ready_cml("r1")))

    result = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status, worker.service_status) == ("RUNNING", "RUNNING", "READY")
    assert worker.metrics_collected_at is not None and worker.running_nodes == 0
    assert moves(worker) == []
    assert (result.action, result.requeue_after) == ("in sync", None)


def test_running_asked_to_stop_with_a_session_drains_first(env):
    worker = env.with_instance(
        WorkerFactory(
            name="r2",
            status="RUNNING",
            desired_status="STOPPED",
            cml_base_url=env.ready_cml("r2"),
        )
    )
    SessionFactory(worker=worker, status="READY")
    before = session_rows(worker)

    result = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status) == ("DRAINING", "STOPPED")
    assert worker.drain_deadline is not None
    assert moves(worker) == [("status", "RUNNING", "DRAINING", ACTOR)]
    assert reasons(worker) == ["STOPPED requested: draining its sessions first"]
    assert (result.action, result.requeue_after) == ("draining", 0)
    assert session_rows(worker) == before
    assert env.instance_state(worker.aws_instance_id) == "running"


# --- DRAINING ------------------------------------------------------------------------------------


def test_draining_with_no_session_left_stops_and_stays_stopped(env):
    worker = env.with_instance(WorkerFactory(name="d1", status="RUNNING", cml_base_url=env.ready_cml("d1")))
    worker_drain(worker, actor="admin", reason="maintenance", timeout_minutes=30)
    already = worker.history.count()

    result = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status) == ("STOPPING", "STOPPED")
    assert moves(worker, already) == [
        ("desired_status", "RUNNING", "STOPPED", ACTOR),
        ("status", "DRAINING", "STOPPING", ACTOR),
    ]
    assert reasons(worker)[already:] == ["drain finished: stopped until started", "drained: no session left"]
    assert (result.action, result.requeue_after) == ("stopping", 0)

    stopping = reconcile_worker(worker.pk)  # STOPPING's handler, in the next pass

    assert (stopping.action, stopping.requeue_after) == ("stopping instance", POLL_SECONDS)
    assert env.instance_state(worker.aws_instance_id) == "stopping"


def test_draining_past_its_deadline_writes_no_session_and_the_sessions_expire_themselves(env):
    worker = env.with_instance(WorkerFactory(name="d2", status="RUNNING", cml_base_url=env.ready_cml("d2")))
    ready = SessionFactory(worker=worker, status="READY")
    running = SessionFactory(worker=worker, status="RUNNING", timeslot_start=timezone.now() - timedelta(minutes=1))
    worker_drain(worker, actor="admin", reason="retire", timeout_minutes=0)
    already = worker.history.count()
    before = session_rows(worker)

    result = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status) == ("DRAINING", "RUNNING")
    assert moves(worker, already) == []
    assert (result.action, result.requeue_after) == ("drain deadline passed: 2 session(s) tearing down", POLL_SECONDS)
    assert session_rows(worker) == before  # the worker reconciler writes no session

    for session in (ready, running):
        outcome = reconcile_session(session.pk)
        session.refresh_from_db()
        assert (session.status, session.end_reason) == ("EXPIRED", "EXPIRED")
        change = session.history.get(to_status="EXPIRED")
        assert change.actor == "lablet-reconciler" and change.reason == "worker d2 reached its drain deadline"
        assert (outcome.action, outcome.requeue_after) == ("expired", 0)


# --- STOPPING ------------------------------------------------------------------------------------


def test_stopping_stops_the_instance_then_records_stopped(env):
    worker = env.with_instance(
        WorkerFactory(
            name="t1",
            status="STOPPING",
            desired_status="STOPPED",
            cml_base_url=env.ready_cml("t1"),
            public_ip="198.51.100.7",
        )
    )

    asked = reconcile_worker(worker.pk)

    assert reload(worker).status == "STOPPING" and moves(worker) == []
    assert (asked.action, asked.requeue_after) == ("stopping instance", POLL_SECONDS)
    assert env.instance_state(worker.aws_instance_id) == "stopping"

    env.advance("moto", STOP_SECONDS)
    done = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status, worker.service_status) == ("STOPPED", "STOPPED", "STOPPED")
    assert worker.public_ip is None
    assert moves(worker) == [("status", "STOPPING", "STOPPED", ACTOR)]
    assert reasons(worker) == ["instance stopped"]
    assert (done.action, done.requeue_after) == ("stopped", 0)
    assert reconcile_worker(worker.pk).action == "stopped"  # STOPPED's handler: meant to stay stopped
    assert moves(reload(worker)) == [("status", "STOPPING", "STOPPED", ACTOR)]


# --- STOPPED -------------------------------------------------------------------------------------


def test_stopped_asked_to_run_starts_the_instance_and_moves_to_starting(env):
    worker = env.with_instance(WorkerFactory(name="o1", status="STOPPED", cml_base_url=""), "stopped")

    result = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status, worker.service_status) == ("STARTING", "RUNNING", "STARTING")
    assert moves(worker) == [("status", "STOPPED", "STARTING", ACTOR)]
    assert reasons(worker) == ["start requested"]
    assert (result.action, result.requeue_after) == ("starting", 0)
    assert env.instance_state(worker.aws_instance_id) == "pending"
    assert reconcile_worker(worker.pk).action == "instance pending"  # STARTING's handler, in the next pass


def test_stopped_and_meant_to_stay_stopped_does_nothing(env):
    worker = env.with_instance(
        WorkerFactory(
            name="o2",
            status="STOPPED",
            desired_status="STOPPED",
            cml_base_url="",
        ),
        "stopped",
    )

    result = reconcile_worker(worker.pk)

    assert reload(worker).status == "STOPPED" and moves(worker) == []
    assert (result.action, result.requeue_after) == ("stopped", None)
    assert env.instance_state(worker.aws_instance_id) == "stopped"


# --- TERMINATING ---------------------------------------------------------------------------------


def test_terminating_terminates_the_instance_then_releases_labs_and_ports(env):
    worker = env.with_instance(
        WorkerFactory(
            name="x1",
            status="TERMINATING",
            desired_status="TERMINATED",
            cml_base_url=env.ready_cml("x1"),
        )
    )
    lab = LabRecordFactory(worker=worker, status="WIPED")
    Port.objects.create(worker=worker, port=2100, lab_record=lab, name="r1_serial")

    asked = reconcile_worker(worker.pk)

    assert reload(worker).status == "TERMINATING" and moves(worker) == []
    assert (asked.action, asked.requeue_after) == ("instance shutting down", POLL_SECONDS)

    env.advance("moto", STOP_SECONDS)
    done = reconcile_worker(worker.pk)

    worker = reload(worker)
    assert (worker.status, worker.desired_status, worker.service_status) == ("TERMINATED", "TERMINATED", "TERMINATED")
    assert moves(worker) == [("status", "TERMINATING", "TERMINATED", ACTOR)]
    assert reasons(worker) == ["instance terminated"]
    assert (done.action, done.requeue_after) == ("terminated", None)
    lab.refresh_from_db()
    assert lab.status == "DELETED" and not Port.objects.filter(worker=worker).exists()
    assert env.instance_state(worker.aws_instance_id) == "terminated"


# --- FAILED --------------------------------------------------------------------------------------


def test_failed_waits_for_an_admin(env):
    worker = WorkerFactory(name="f1", status="FAILED", cml_base_url="")

    result = reconcile_worker(worker.pk)

    assert reload(worker).status == "FAILED" and moves(worker) == []
    assert (result.action, result.requeue_after) == ("failed: waiting for an admin", None)


def test_failed_asked_to_terminate_moves_to_terminating_and_the_next_pass_terminates(env):
    worker = WorkerFactory(name="f2", status="FAILED", desired_status="TERMINATED", cml_base_url="")

    asked = reconcile_worker(worker.pk)

    assert reload(worker).status == "TERMINATING"
    assert (asked.action, asked.requeue_after) == ("terminating", 0)

    result = reconcile_worker(worker.pk)  # TERMINATING's handler, in the next pass

    worker = reload(worker)
    assert (worker.status, worker.desired_status) == ("TERMINATED", "TERMINATED")
    assert moves(worker) == [("status", "FAILED", "TERMINATING", ACTOR), ("status", "TERMINATING", "TERMINATED", ACTOR)]
    assert reasons(worker) == ["terminate requested", "terminated"]
    assert (result.action, result.requeue_after) == ("terminated", None)


# --- a terminated worker's sessions terminate themselves ----------------------------------------


def test_a_terminated_worker_writes_no_session_and_its_ready_session_terminates_as_failed(env):
    worker = WorkerFactory(name="g1", status="TERMINATED", desired_status="TERMINATED", cml_base_url="")
    session = SessionFactory(worker=worker, status="READY")
    before = session_rows(worker)

    result = reconcile_worker(worker.pk)

    assert (result.action, result.requeue_after) == ("nothing to do", None)
    assert moves(worker) == []
    assert session_rows(worker) == before

    outcome = reconcile_session(session.pk)

    session.refresh_from_db()
    assert (session.status, session.end_reason) == ("TERMINATED", "FAILED")
    change = session.history.get(to_status="TERMINATED")
    assert change.actor == "lablet-reconciler" and change.reason == "worker g1 was terminated"
    assert (outcome.action, outcome.requeue_after) == ("worker terminated", 0)


# --- which workers need work, failures, projection ------------------------------------------------


def test_workers_needing_work_are_exactly_those_with_something_to_do(settings):
    now = timezone.now()
    fresh, stale = now, now - timedelta(seconds=settings.LCM_WORKER_SYNC_SECONDS + 1)
    due = {
        "pending": WorkerFactory(status="PENDING"),
        "provisioning": WorkerFactory(status="PROVISIONING"),
        "starting": WorkerFactory(status="STARTING"),
        "draining": WorkerFactory(status="DRAINING", metrics_collected_at=fresh),
        "stopping": WorkerFactory(status="STOPPING"),
        "terminating": WorkerFactory(status="TERMINATING"),
        "running-stale": WorkerFactory(status="RUNNING", metrics_collected_at=stale),
        "running-never-synced": WorkerFactory(status="RUNNING", metrics_collected_at=None),
        "running-to-stop": WorkerFactory(status="RUNNING", desired_status="STOPPED", metrics_collected_at=fresh),
        "running-licence": WorkerFactory(status="RUNNING", metrics_collected_at=fresh, license_status="REGISTERING"),
        "stopped-to-start": WorkerFactory(status="STOPPED", desired_status="RUNNING"),
        "failed-to-terminate": WorkerFactory(status="FAILED", desired_status="TERMINATED"),
        "backoff-passed": WorkerFactory(status="STARTING", next_attempt_at=now - timedelta(seconds=1)),
    }
    WorkerFactory(status="PENDING", desired_status="STOPPED")
    WorkerFactory(status="RUNNING", metrics_collected_at=fresh)
    WorkerFactory(status="RUNNING", metrics_collected_at=fresh, license_status="REGISTERED")
    WorkerFactory(status="STOPPED", desired_status="STOPPED")
    WorkerFactory(status="FAILED", desired_status="RUNNING")
    WorkerFactory(status="TERMINATED", desired_status="TERMINATED")
    WorkerFactory(status="STARTING", next_attempt_at=now + timedelta(minutes=1))  # backing off

    assert sorted(workers_needing_work(now)) == sorted(str(w.pk) for w in due.values())


def test_record_failure_backs_off_on_the_row_and_records_the_error(settings):
    worker = WorkerFactory(status="RUNNING")
    error = http.Unavailable("cml", "system_information", "ConnectionError")

    delay = record_failure(worker.pk, error)

    worker = reload(worker)
    assert delay is not None and delay > 0
    assert worker.attempts == 1 and worker.status == "RUNNING"
    assert worker.last_error.startswith("Unavailable: ")
    assert worker.next_attempt_at is not None and worker.next_attempt_at > timezone.now()
    assert record_failure(worker.pk, error) >= delay  # longer each time
    assert reload(worker).attempts == 2

    backing_off = reconcile_worker(worker.pk)
    assert backing_off.action == "backing off" and 0 < backing_off.requeue_after <= 2 * delay + 1
    assert moves(worker) == []


def test_record_failure_at_the_attempt_limit_fails_a_worker_that_cannot_get_up(settings):
    settings.LCM_MAX_RECONCILE_ATTEMPTS = 3
    worker = WorkerFactory(status="PENDING", attempts=2)

    assert record_failure(worker.pk, RuntimeError("no capacity")) is None

    worker = reload(worker)
    assert (worker.status, worker.attempts, worker.next_attempt_at) == ("FAILED", 0, None)
    assert worker.last_error == "RuntimeError: no capacity"
    assert moves(worker) == [("status", "PENDING", "FAILED", ACTOR)]
    assert reasons(worker) == ["gave up after 3 attempts: RuntimeError: no capacity"]
    assert record_failure("00000000-0000-4000-8000-000000000000", RuntimeError("x")) is None  # gone: nothing


def test_a_pass_that_succeeds_clears_the_backoff(env):
    worker = env.with_instance(
        WorkerFactory(
            name="b1",
            status="RUNNING",
            cml_base_url=env.ready_cml("b1"),
            attempts=2,
            last_error="Unavailable: earlier",
        )
    )

    assert reconcile_worker(worker.pk).action == "in sync"

    worker = reload(worker)
    assert (worker.attempts, worker.next_attempt_at) == (0, None)


def test_project_workers_in_process_enqueues_each_changed_worker(monkeypatch):
    first, second = WorkerFactory(status="RUNNING"), WorkerFactory(status="STOPPED", desired_status="STOPPED")
    projected, enqueued = [], []
    monkeypatch.setattr("workers.reconcilers.coordination.project_workers", lambda rows: projected.extend(rows))
    monkeypatch.setattr("workers.reconcilers.loops.enqueue", lambda loop, key: enqueued.append((loop, key)))

    project_workers([first.pk, second.pk], in_process=True)

    assert sorted(projected) == sorted([(first.pk, "RUNNING", "RUNNING"), (second.pk, "STOPPED", "STOPPED")])
    assert sorted(enqueued) == sorted([("workers", str(first.pk)), ("workers", str(second.pk))])
    enqueued.clear()
    project_workers([first.pk], in_process=False)
    assert enqueued == []


def test_a_worker_gone_from_the_database_is_done():
    assert reconcile_worker("00000000-0000-4000-8000-000000000000").action == "gone"
