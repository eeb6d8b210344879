"""The worker fleet through the real loops (issue 7 acceptance), against moto (EC2, CloudWatch) and the CML, LDS and
Grading Engine simulators, all in this process on free ports.

Time-driven behaviour runs on the simulators' clocks, never on sleeps: an EC2 instance stays `pending`
for moto's `boot` timing until `/_sim/clock` moves past it, a virtual CML answers `ready: false`
until its warm-up has passed on the CML simulator's clock, and a licence registration completes
(or fails) after its timing likewise. Each tick runs the loops as beat would: `lcm.loops.tick` of
placement, lablets, autoscaler and workers, fanning out `lcm.loops.reconcile_key` per key.
"""

import html
from datetime import timedelta

import boto3
import pytest
from django.utils import timezone

from lcm import loops
from scheduling.selectors import worker_capacities
from sessions.booking import session_create
from sessions.models import LabletSession
from sessions.services import session_transition
from simulators.runner import start_simulators
from tests.factories import DefinitionFactory, TemplateFactory, WorkerFactory
from tests.support.simulators import SIM_TOKEN, sim_control
from workers.autoscaling import autoscale_tick
from workers.clients.cml import CMLClient, forget_tokens
from workers.clients.ec2 import TAG_MANAGED_BY, TAG_WORKER_ID, ec2_client
from workers.discovery import discovery_tick
from workers.models import CMLWorker, LabRecord, LicenseRequest, Port, ScaleDecision, SystemSettings, WorkerTemplate
from workers.services import worker_cancel_drain, worker_drain, worker_license_deregister, worker_license_register

pytestmark = pytest.mark.django_db

BOOT_SECONDS = 30  # moto: an instance stays `pending` this long after RunInstances/StartInstances
WARMUP_SECONDS = 60  # CML simulator: a new virtual CML answers `ready: false` this long
LICENCE_SECONDS = 30  # CML simulator: a registration stays IN_PROGRESS this long
LOOP_ORDER = ("placement", "lablets", "autoscaler", "workers")


@pytest.fixture(scope="module")
def servers():
    """The CML simulator on its own (real timings, driven by its clock); LDS, Grading Engine and moto at zero delay."""
    cml = start_simulators(
        control_token=SIM_TOKEN,
        cml_port=0,
        only=["cml"],
        timings={
            "cml": {"warmup": WARMUP_SECONDS, "node_queue": 0, "node_boot": 0, "licence_registration": LICENCE_SECONDS}
        },
    )
    rest = start_simulators(
        control_token=SIM_TOKEN,
        lds_port=0,
        grading_port=0,
        moto_port=0,
        zero_delay=True,
        only=["lds", "grading", "moto"],
    )
    urls = cml.urls | rest.urls
    yield urls
    cml.stop()
    rest.stop()


@pytest.fixture
def fleet(servers, settings):
    """Fresh simulators, settings pointing at them, autoscaling on, and one cheap template (the seeded ones off)."""
    for name in ("cml", "lds", "grading", "moto"):
        sim_control.post(f"{servers[name]}/_sim/reset", timeout=10).raise_for_status()
    sim(servers, "moto", "POST", "timings", json={"boot": BOOT_SECONDS, "stop": 10, "terminate": 10})
    for name in ("lds", "grading"):
        sim_control.put(
            f"{servers[name]}/_sim/webhook", json={"url": None, "secret": None}, timeout=5
        )  # no LCM web here
    settings.LCM_AWS_ENDPOINT_URL = servers["moto"]
    settings.LCM_CML_SIMULATOR_URL = servers["cml"]
    settings.LCM_CML_URL_TEMPLATE = ""
    settings.LCM_LDS_BASE_URL = servers["lds"]
    settings.LCM_GRADING_BASE_URL = servers["grading"]
    settings.LCM_HTTP_READ_TIMEOUT = 5.0
    settings.LCM_HTTP_RETRIES = 1
    forget_tokens()
    SystemSettings.objects.update_or_create(
        pk=1,
        defaults={
            "autoscaling_enabled": True,
            "min_workers_per_region": 0,
            "max_workers_per_region": 5,
            "scale_up_cooldown_minutes": 5,
            "scale_down_cooldown_minutes": 15,
            "idle_detection_enabled": False,
            "discovery_enabled": True,
            "discovery_ami_pattern": "cml-2.9*",
        },
    )
    WorkerTemplate.objects.update(enabled=False)
    template = TemplateFactory(
        name="fleet-small",
        instance_type="m5.2xlarge",
        ami_name_pattern="cml-2.9*",
        cpu_cores=8,
        memory_gb=32,
        storage_gb=200,
        max_nodes=20,
        startup_minutes=8,
        cost_per_hour="0.384",
        enabled=True,
    )
    return type("Fleet", (), {"urls": servers, "template": template})


def sim(urls, name: str, method: str, path: str, **kwargs):
    response = sim_control.request(method, f"{urls[name]}/_sim/{path}", timeout=10, **kwargs)
    response.raise_for_status()
    return response.json()


def advance(fleet, name: str, seconds: float) -> None:
    """Move one simulator's clock forward."""
    sim(fleet.urls, name, "POST", "clock", json={"advance": seconds})


def tick(names=LOOP_ORDER) -> None:
    """One round of the loops, as beat ticks them, each key reconciled once."""
    for name in names:
        for key in loops.tick(name):
            loops.reconcile_key(name, key)


def drive(until, *, ticks: int = 20, each=None) -> int:
    """Tick until `until()` holds; `each(i)` runs before tick i (clock moves). Returns the ticks used."""
    for i in range(ticks):
        if until():
            return i
        if each is not None:
            each(i)
        tick()
    assert until(), "the loops did not reach the expected state"
    return ticks


def status(obj) -> str:
    return type(obj).objects.get(pk=obj.pk).status


def worker_named(name) -> CMLWorker:
    return CMLWorker.objects.get(name=name)


def book(definition=None, *, minutes: int = 5, owner: str = "alice@example.com") -> LabletSession:
    definition = definition or DefinitionFactory(grading_enabled=False, cml_version_min="2.8")
    return session_create(
        definition=definition, owner=owner, actor="test", timeslot_start=timezone.now() + timedelta(minutes=minutes)
    )


def moto_instance(fleet, instance_id: str) -> dict:
    ec2 = boto3.client(
        "ec2",
        endpoint_url=fleet.urls["moto"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def running_worker(fleet, name: str, **fields) -> CMLWorker:
    """A RUNNING worker as the reconciler leaves one: a running instance tagged for it and a ready virtual CML."""
    worker = WorkerFactory(
        name=name,
        template=fleet.template,
        cpu_cores=fleet.template.cpu_cores,
        memory_gb=fleet.template.memory_gb,
        storage_gb=fleet.template.storage_gb,
        max_nodes=fleet.template.max_nodes,
        cml_base_url=f"{fleet.urls['cml']}/w/{name}",
        **fields,
    )
    ec2 = ec2_client()
    image = ec2.find_images("cml-2.9*")[0]
    instance = ec2.run_instance(image_id=image.id, instance_type="m5.2xlarge", name=name, worker_id=str(worker.pk))
    sim(fleet.urls, "moto", "POST", f"instances/{instance.id}/state", json={"state": "running"})
    sim(fleet.urls, "cml", "POST", "workers", json={"name": name, "warmup": 0})
    CMLWorker.objects.filter(pk=worker.pk).update(aws_instance_id=instance.id, metrics_collected_at=timezone.now())
    return CMLWorker.objects.get(pk=worker.pk)


def ready_session(fleet, worker, **kwargs) -> LabletSession:
    session = book(**kwargs)
    drive(lambda: status(session) == "READY", ticks=10)
    assert LabletSession.objects.get(pk=session.pk).worker_id == worker.pk
    return session


# ---------------------------------------------------------------------------------------
# Scale up: one demand, one worker, through EC2 boot and the CML readiness gate
# ---------------------------------------------------------------------------------------


def test_a_session_that_fits_no_worker_starts_exactly_one_worker_which_boots_and_serves_it(fleet):
    session = book()
    seen = {}

    def clocks(i):
        if i == 3:  # the instance has been pending for a few ticks: its boot completes
            seen["before_boot"] = (worker_named(launched()).status, status(session))
            advance(fleet, "moto", BOOT_SECONDS)
        if i == 5:  # the instance runs, CML warms up: the readiness gate holds the worker in STARTING
            worker = worker_named(launched())
            seen["warming"] = (worker.status, worker.service_status, status(session))
            advance(fleet, "cml", WARMUP_SECONDS)

    def launched():
        return CMLWorker.objects.get().name

    used = drive(lambda: status(session) == "READY", ticks=10, each=clocks)
    for _ in range(10 - used):
        tick()  # the rest of the ten ticks: nothing more may be launched

    assert seen["before_boot"] == ("STARTING", "PENDING")
    assert seen["warming"] == ("STARTING", "BOOTING", "PENDING")
    assert CMLWorker.objects.count() == 1
    launches = ScaleDecision.objects.filter(action="LAUNCH")
    assert launches.count() == 1
    decision = launches.get()
    assert decision.template == fleet.template and decision.sessions == [str(session.pk)]
    assert "fleet-small" in decision.reason and "fit no running or coming worker" in decision.reason

    worker = CMLWorker.objects.get()
    assert (worker.status, worker.desired_status, worker.service_status) == ("RUNNING", "RUNNING", "READY")
    assert worker.cml_version == "2.9.0" and worker.cml_base_url == f"{fleet.urls['cml']}/w/{worker.name}"
    assert [h.to_status for h in worker.history.filter(field="status")] == [
        "PENDING",
        "PROVISIONING",
        "STARTING",
        "RUNNING",
    ]
    instance = moto_instance(fleet, worker.aws_instance_id)
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags[TAG_WORKER_ID] == str(worker.pk) and tags[TAG_MANAGED_BY] == "lcm" and tags["Name"] == worker.name
    assert instance["InstanceType"] == "m5.2xlarge" and instance["State"]["Name"] == "running"
    run_calls = [r for r in sim(fleet.urls, "moto", "GET", "requests") if r["operation"] == "RunInstances"]
    assert len(run_calls) == 1
    session.refresh_from_db()
    assert session.status == "READY" and session.worker == worker


def test_every_scale_decision_is_shown_with_its_reason_in_the_admin(fleet, admin_client):
    session = book()
    [decision] = autoscale_tick(require_leader=False)
    recorded = ScaleDecision.objects.get()
    page = admin_client.get("/admin/workers/scaledecision/").content.decode()
    assert recorded.action == decision.action == "LAUNCH" and recorded.sessions == [str(session.pk)]
    assert html.escape(recorded.reason) in page and "fleet-small" in page
    detail = admin_client.get(f"/admin/workers/scaledecision/{recorded.pk}/change/").content.decode()
    assert html.escape(recorded.reason) in detail


def test_a_failed_launch_backs_off_and_the_coming_worker_still_counts(fleet):
    sim(fleet.urls, "moto", "POST", "faults", json={"operation": "RunInstances", "code": "InstanceLimitExceeded"})
    session = book()
    tick()
    worker = CMLWorker.objects.get()
    assert worker.status == "PENDING" and worker.attempts == 1 and "QuotaExceeded" in worker.last_error
    CMLWorker.objects.filter(pk=worker.pk).update(next_attempt_at=None)  # the backoff has passed
    tick()
    assert status(worker) in ("PROVISIONING", "STARTING")
    assert CMLWorker.objects.count() == 1  # the failed launch's worker was still coming capacity
    assert status(session) == "PENDING"


# ---------------------------------------------------------------------------------------
# Scale down through DRAINING; cancel; the drain deadline
# ---------------------------------------------------------------------------------------


def test_scale_down_drains_only_the_empty_unneeded_worker_and_stops_it(fleet):
    SystemSettings.objects.filter(pk=1).update(scale_down_cooldown_minutes=0)
    busy = running_worker(fleet, "busy")
    ready_session(fleet, busy)
    spare_a = running_worker(fleet, "spare-a")
    spare_b = running_worker(fleet, "spare-b")
    CMLWorker.objects.filter(pk=busy.pk).update(cpu_cores=2)  # full: the next session cannot go there
    # Due within the lead window: one of the spares is needed for it.
    pending = book(minutes=30, owner="bob@example.com")

    decisions = autoscale_tick(require_leader=False)

    assert [d.action for d in decisions] == ["DRAIN"]
    drained = worker_named(decisions[0].worker_name)
    kept = spare_b if drained == spare_a else spare_a
    assert drained in (spare_a, spare_b)
    assert status(busy) == "RUNNING" and status(kept) == "RUNNING" and status(drained) == "DRAINING"
    assert "has held no session" in decisions[0].reason
    assert ScaleDecision.objects.filter(action="DRAIN", worker=drained).exists()

    drive(lambda: status(drained) == "STOPPING", ticks=3)
    assert status(pending) == "SCHEDULED" and LabletSession.objects.get(pk=pending.pk).worker_id == kept.pk
    advance(fleet, "moto", 10)  # the stop takes moto's `stop` timing
    drive(lambda: status(drained) == "STOPPED", ticks=3)
    drained.refresh_from_db()
    assert drained.desired_status == "STOPPED"
    assert moto_instance(fleet, drained.aws_instance_id)["State"]["Name"] == "stopped"
    assert status(busy) == "RUNNING"


def test_scale_down_keeps_the_minimum_and_waits_for_the_cooldown(fleet):
    running_worker(fleet, "only")
    SystemSettings.objects.filter(pk=1).update(min_workers_per_region=1)
    assert autoscale_tick(require_leader=False) == []  # the region keeps its minimum
    SystemSettings.objects.filter(pk=1).update(min_workers_per_region=0, scale_down_cooldown_minutes=15)
    launch = ScaleDecision.objects.create(
        action="LAUNCH", region="us-east-1", reason="earlier demand", at=timezone.now() - timedelta(minutes=5)
    )
    assert autoscale_tick(require_leader=False) == []  # capacity was added within the cooldown
    ScaleDecision.objects.filter(pk=launch.pk).update(at=timezone.now() - timedelta(minutes=16))
    assert autoscale_tick(require_leader=False) == []  # and the worker itself came up just now
    CMLWorker.objects.update(created_at=timezone.now() - timedelta(minutes=16))
    assert [d.action for d in autoscale_tick(require_leader=False)] == ["DRAIN"]


def test_a_draining_worker_takes_no_session_and_cancel_returns_it_to_running(fleet):
    worker = running_worker(fleet, "w1")
    session = ready_session(fleet, worker)
    worker_drain(worker, actor="admin", reason="maintenance", timeout_minutes=60)
    newcomer = book(owner="carol@example.com")
    SystemSettings.objects.filter(pk=1).update(autoscaling_enabled=False)
    for _ in range(3):
        tick()
    assert status(worker) == "DRAINING" and status(session) == "READY"
    assert status(newcomer) == "PENDING"  # no new session on a draining worker
    worker_cancel_drain(worker, actor="admin", reason="changed my mind")
    drive(lambda: status(newcomer) == "READY", ticks=5)
    worker.refresh_from_db()
    assert (worker.status, worker.desired_status, worker.drain_deadline) == ("RUNNING", "RUNNING", None)
    assert LabletSession.objects.get(pk=newcomer.pk).worker_id == worker.pk


def test_the_drain_deadline_expires_the_remaining_sessions_and_tears_them_down_without_leaks(fleet):
    worker = running_worker(fleet, "w1")
    first = ready_session(fleet, worker)
    second = ready_session(fleet, worker, owner="dave@example.com")
    session_transition(first, "RUNNING", actor="candidate")
    worker_drain(worker, actor="admin", reason="retire", timeout_minutes=0)

    def stop_completes(i):
        if status(worker) == "STOPPING":
            advance(fleet, "moto", 10)

    drive(lambda: status(worker) == "STOPPED", ticks=12, each=stop_completes)

    for session in (first, second):
        session.refresh_from_db()
        assert session.status == "ARCHIVED" and session.end_reason == "EXPIRED"
        assert "drain deadline" in session.history.get(to_status="EXPIRED").reason
        assert session.user_session.status in ("ENDED", "FAULTED")
    labs = LabRecord.objects.filter(worker=worker)
    assert labs.count() == 2 and {lab.status for lab in labs} == {"WIPED"}
    assert not labs.filter(active_session__isnull=False).exists()
    cml_labs = sim(fleet.urls, "cml", "GET", f"workers/{worker.name}")
    assert cml_labs["labs"] and all(lab["state"] == "DEFINED_ON_CORE" for lab in cml_labs["labs"].values())
    lds = sim(fleet.urls, "lds", "GET", "state")
    assert len(lds["sessions"]) == 2 and all(s["is_finalized"] for s in lds["sessions"].values())
    assert worker_capacities([worker.pk])[str(worker.pk)].sessions == 0
    worker.refresh_from_db()
    assert worker.desired_status == "STOPPED"
    assert moto_instance(fleet, worker.aws_instance_id)["State"]["Name"] == "stopped"


# ---------------------------------------------------------------------------------------
# Idle auto-pause and restart on demand
# ---------------------------------------------------------------------------------------


def test_an_idle_worker_is_paused_and_started_again_when_a_session_needs_it(fleet):
    SystemSettings.objects.filter(pk=1).update(
        autoscaling_enabled=False, idle_detection_enabled=True, idle_timeout_minutes=30
    )
    worker = running_worker(fleet, "w1")
    CMLWorker.objects.filter(pk=worker.pk).update(
        created_at=timezone.now() - timedelta(minutes=40), last_activity_at=timezone.now() - timedelta(minutes=31)
    )

    decisions = autoscale_tick(require_leader=False)
    assert [d.action for d in decisions] == ["PAUSE"]
    assert "no session and no CML activity for 31 min" in decisions[0].reason
    worker.refresh_from_db()
    assert (worker.status, worker.desired_status) == ("STOPPING", "STOPPED")
    drive(lambda: status(worker) == "STOPPED", ticks=3, each=lambda i: advance(fleet, "moto", 10))
    assert moto_instance(fleet, worker.aws_instance_id)["State"]["Name"] == "stopped"

    session = book()
    seen = {}

    def boot(i):
        if i == 2:
            seen["booting"] = status(worker)
            advance(fleet, "moto", BOOT_SECONDS)

    drive(lambda: status(session) == "READY", ticks=8, each=boot)
    assert seen["booting"] == "STARTING"
    assert [d.action for d in ScaleDecision.objects.order_by("at")] == ["PAUSE", "START"]
    assert CMLWorker.objects.count() == 1  # started again, nothing launched (autoscaling is even off)
    worker.refresh_from_db()
    assert (worker.status, worker.desired_status) == ("RUNNING", "RUNNING")
    assert LabletSession.objects.get(pk=session.pk).worker_id == worker.pk


def test_a_worker_an_admin_stopped_is_not_started_for_demand(fleet):
    worker = running_worker(fleet, "w1")
    from workers.services import worker_set_desired

    worker_set_desired(worker, "STOPPED", actor="admin", reason="night")
    drive(lambda: status(worker) == "STOPPED", ticks=4, each=lambda i: advance(fleet, "moto", 10))
    SystemSettings.objects.filter(pk=1).update(autoscaling_enabled=False)
    book()
    decisions = autoscale_tick(require_leader=False)
    assert [d.action for d in decisions] == ["WAIT"]
    assert "autoscaling is disabled" in decisions[0].reason
    assert status(worker) == "STOPPED"
    assert autoscale_tick(require_leader=False) == []  # the same wait is on record once, not once per tick
    assert ScaleDecision.objects.filter(action="WAIT").count() == 1


def test_an_admin_terminate_drains_then_terminates_and_releases_labs_and_ports(fleet):
    from workers.services import worker_request_desired

    SystemSettings.objects.filter(pk=1).update(drain_timeout_minutes=0, autoscaling_enabled=False)
    worker = running_worker(fleet, "w1")
    session = ready_session(fleet, worker)
    worker_request_desired(worker, "TERMINATED", actor="admin", reason="decommission")
    tick(["workers"])
    assert status(worker) == "DRAINING"  # its session first
    assert worker.history.filter(to_status="DRAINING").get().actor == "worker-reconciler"

    drive(lambda: status(worker) == "TERMINATED", ticks=12, each=lambda i: advance(fleet, "moto", 10))

    session.refresh_from_db()
    assert (session.status, session.end_reason) == ("ARCHIVED", "EXPIRED")
    moves = [h.to_status for h in worker.history.filter(field="status")]
    assert moves[-3:] == ["DRAINING", "TERMINATING", "TERMINATED"]
    assert moto_instance(fleet, worker.aws_instance_id)["State"]["Name"] == "terminated"
    assert set(LabRecord.objects.filter(worker=worker).values_list("status", flat=True)) == {"DELETED"}
    assert not Port.objects.filter(worker=worker).exists()


# ---------------------------------------------------------------------------------------
# Licences: asynchronous intents with their outcome recorded
# ---------------------------------------------------------------------------------------


def test_a_licence_registration_succeeds_and_a_deregistration_follows(fleet):
    worker = running_worker(fleet, "w1")
    worker_license_register(worker, "abc123==", actor="admin")
    tick(["workers"])
    worker.refresh_from_db()
    assert worker.license_status == "REGISTERING"
    request = LicenseRequest.objects.get(worker=worker)
    assert request.submitted_at is not None and request.token == ""  # handed to CML, then forgotten
    assert sim(fleet.urls, "cml", "GET", f"workers/{worker.name}")["licence"] == "IN_PROGRESS"
    advance(fleet, "cml", LICENCE_SECONDS)
    tick(["workers"])
    worker.refresh_from_db()
    assert (worker.license_status, worker.license_error) == ("REGISTERED", "")
    request.refresh_from_db()
    assert request.outcome == "REGISTERED" and request.finished_at is not None
    assert [h.to_status for h in worker.history.filter(field="license_status")] == ["REGISTERING", "REGISTERED"]

    worker_license_deregister(worker, actor="admin")
    tick(["workers"])
    worker.refresh_from_db()
    assert worker.license_status == "UNREGISTERED"
    assert sim(fleet.urls, "cml", "GET", f"workers/{worker.name}")["licence"] == "UNREGISTERED"


def test_a_scripted_licence_failure_is_recorded_with_its_error(fleet):
    worker = running_worker(fleet, "w1")
    sim(fleet.urls, "cml", "PATCH", f"workers/{worker.name}", json={"registration_outcome": "FAILED"})
    worker_license_register(worker, "abc123==", actor="admin")
    tick(["workers"])
    advance(fleet, "cml", LICENCE_SECONDS)
    tick(["workers"])
    worker.refresh_from_db()
    assert worker.license_status == "FAILED"
    assert "rejected the token" in worker.license_error
    assert LicenseRequest.objects.get(worker=worker).outcome == "FAILED"
    change = worker.history.filter(field="license_status").last()
    assert (change.to_status, change.actor) == ("FAILED", "worker-reconciler") and "rejected" in change.reason
    # A failed registration may be asked for again, and then succeeds.
    sim(fleet.urls, "cml", "PATCH", f"workers/{worker.name}", json={"registration_outcome": "COMPLETED"})
    worker_license_register(worker, "abc123==", actor="admin")
    tick(["workers"])
    advance(fleet, "cml", LICENCE_SECONDS)
    tick(["workers"])
    worker.refresh_from_db()
    assert (worker.license_status, worker.license_error) == ("REGISTERED", "")


# ---------------------------------------------------------------------------------------
# Discovery: instances started or terminated behind LCM's back; labs; metrics
# ---------------------------------------------------------------------------------------


def test_an_instance_started_behind_lcms_back_is_discovered_and_becomes_a_running_worker(fleet):
    raw = boto3.client(
        "ec2",
        endpoint_url=fleet.urls["moto"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    image = raw.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["cml-2.9*"]}])["Images"][0]
    launched = raw.run_instances(
        ImageId=image["ImageId"],
        InstanceType="m5.2xlarge",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "hand-made"}]}],
    )["Instances"][0]
    raw.run_instances(ImageId="ami-12345678", InstanceType="t3.micro", MinCount=1, MaxCount=1)  # not CML: ignored
    advance(fleet, "moto", BOOT_SECONDS)

    report = discovery_tick(force=True, require_leader=False)

    assert report["imported"] == ["hand-made"]
    worker = worker_named("hand-made")
    assert worker.aws_instance_id == launched["InstanceId"] and worker.template == fleet.template
    assert (worker.status, worker.desired_status) == ("STARTING", "RUNNING")
    assert worker.cpu_cores == fleet.template.cpu_cores
    assert ScaleDecision.objects.get(action="DISCOVER").worker == worker
    tags = {t["Key"]: t["Value"] for t in moto_instance(fleet, worker.aws_instance_id)["Tags"]}
    assert tags[TAG_WORKER_ID] == str(worker.pk) and tags[TAG_MANAGED_BY] == "lcm"
    assert discovery_tick(force=True, require_leader=False)["imported"] == []  # known now

    drive(lambda: status(worker) == "RUNNING", ticks=4, each=lambda i: advance(fleet, "cml", WARMUP_SECONDS))
    assert CMLWorker.objects.count() == 1


def test_an_instance_terminated_behind_lcms_back_makes_its_worker_terminated(fleet):
    worker = running_worker(fleet, "w1")
    session = ready_session(fleet, worker)
    lab = LabletSession.objects.get(pk=session.pk).lab_record
    assert Port.objects.filter(worker=worker).exists()
    ec2_client().terminate(worker.aws_instance_id)
    advance(fleet, "moto", 10)

    report = discovery_tick(force=True, require_leader=False)

    assert report["vanished"] == ["w1"]
    worker.refresh_from_db()
    assert (worker.status, worker.desired_status) == ("TERMINATED", "TERMINATED")
    assert "terminated behind LCM's back" in worker.history.filter(field="status").last().reason
    assert ScaleDecision.objects.filter(action="VANISHED", worker=worker).exists()
    lab.refresh_from_db()
    assert lab.status == "DELETED" and not Port.objects.filter(worker=worker).exists()
    # The session notices its worker is gone and terminates itself (the worker reconciler writes no session).
    drive(
        lambda: LabletSession.objects.filter(pk=session.pk, status="TERMINATED", cleanup_pending=False).exists(),
        ticks=4,
    )
    session.refresh_from_db()
    assert (session.status, session.end_reason) == ("TERMINATED", "FAILED")
    assert session.user_session.status == "FAULTED"


def test_a_stopped_worker_whose_instance_is_terminated_behind_lcms_back_is_found_by_discovery(fleet):
    worker = running_worker(fleet, "w1")
    sim(fleet.urls, "moto", "POST", f"instances/{worker.aws_instance_id}/state", json={"state": "stopped"})
    CMLWorker.objects.filter(pk=worker.pk).update(status="STOPPED", desired_status="STOPPED")
    tick(["workers"])
    assert status(worker) == "STOPPED"  # a stopped worker is not polled by the workers loop
    ec2_client().terminate(worker.aws_instance_id)
    advance(fleet, "moto", 10)
    assert discovery_tick(force=True, require_leader=False)["vanished"] == ["w1"]
    assert status(worker) == "TERMINATED"


def test_the_workers_loop_itself_notices_a_vanished_instance(fleet, settings):
    worker = running_worker(fleet, "w1")
    ec2_client().terminate(worker.aws_instance_id)
    advance(fleet, "moto", 10)
    CMLWorker.objects.filter(pk=worker.pk).update(metrics_collected_at=None)  # its periodic sync is due
    tick(["workers"])
    assert status(worker) == "TERMINATED"


def test_metrics_and_lab_discovery_on_sync(fleet):
    worker = running_worker(fleet, "w1")
    session = ready_session(fleet, worker)
    own_lab = LabletSession.objects.get(pk=session.pk).lab_record
    cloudwatch = boto3.client(
        "cloudwatch",
        endpoint_url=fleet.urls["moto"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    cloudwatch.put_metric_data(
        Namespace="AWS/EC2",
        MetricData=[
            {
                "MetricName": "CPUUtilization",
                "Dimensions": [{"Name": "InstanceId", "Value": worker.aws_instance_id}],
                "Value": 42.5,
                "Unit": "Percent",
                "Timestamp": timezone.now() - timedelta(minutes=1),
            }
        ],
    )
    # A lab made on the worker by hand, with a port tag, and an LCM lab that vanishes behind LCM's back.
    cml = CMLClient(worker.cml_base_url, "admin", "admin")
    foreign = cml.import_lab(
        "lab: {title: by-hand, version: 0.2.2}\n"
        "nodes:\n"
        "  - {id: n0, label: r1, node_definition: iosv, x: 0, y: 0, tags: ['serial:2500'], interfaces: []}\n"
        "links: []\n",
        title="by-hand",
    )
    stray = LabRecord.objects.create(worker=worker, cml_lab_id="00000000-0000-4000-8000-000000000000", status="WIPED")
    Port.objects.create(worker=worker, port=2999, lab_record=stray, name="x_serial")
    CMLWorker.objects.filter(pk=worker.pk).update(metrics_collected_at=None)

    tick(["workers"])

    worker.refresh_from_db()
    assert worker.cpu_percent == 42.5  # CloudWatch when it has data
    assert worker.memory_percent is not None and worker.running_nodes >= 1  # from CML system_stats
    assert worker.metrics_collected_at is not None and worker.service_status == "READY"
    discovered = LabRecord.objects.get(worker=worker, cml_lab_id=foreign)
    assert discovered.status == "ORPHANED" and discovered.title == "by-hand"
    assert discovered.ports == {"r1_serial": 2500}
    stray.refresh_from_db()
    assert stray.status == "DELETED" and not Port.objects.filter(lab_record=stray).exists()
    own_lab.refresh_from_db()
    assert own_lab.status == "BOOTED"  # LCM's own live lab is left alone
