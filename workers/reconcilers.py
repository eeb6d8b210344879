"""The worker reconciler (SPEC §2.4, §3.6): one function of one worker id, level-triggered.

Desired state, by `desired_status`:
- RUNNING: an EC2 instance launched from the worker's template (tags `Name`, `lcm:worker_id`,
  `lcm:managed_by`), running, its CML answering `system_information.ready` (the readiness gate:
  STARTING until then, RUNNING after). A worker registered without an instance (an existing CML
  endpoint) only goes through the gate.
- STOPPED: no session left (a RUNNING worker that holds sessions drains first: DRAINING), then the
  instance stopped: STOPPING → STOPPED.
- TERMINATED: drained likewise, the instance terminated, the worker's labs and ports released:
  TERMINATING → TERMINATED.
A DRAINING worker (admin, autoscaler, or the reconciler itself for a stop) takes no new sessions
(placement only uses RUNNING workers); once it holds none it stops (its desired status becomes
STOPPED, so it stays stopped until someone starts it); at its drain deadline the sessions still
on it expire, and the lablet reconciler tears them down (lab stopped and wiped, LDS released)
before the worker stops. While RUNNING or DRAINING, every `LCM_WORKER_SYNC_SECONDS`: CML
readiness, metrics (CloudWatch + CML `system_stats`) and lab discovery (unknown labs recorded
as ORPHANED with their ports reserved; vanished ones DELETED, releasing theirs); every pass the
instance is checked, so one stopped behind LCM's back is followed through STOPPING (and started
again when it should run) and one terminated or gone behind its back takes the worker to
TERMINATED. Licence intents (REGISTERING, DEREGISTERING) are carried out against CML (`workers.licensing`) and
their outcome recorded on the worker (`license_status`, `license_error`) and on the `LicenseRequest`.

Invariants and crash points: the status that asks for an EC2 action is committed before the
action (STOPPING before StopInstances, TERMINATING before TerminateInstances, STARTING after a
StartInstances that is safe to repeat), so a pass that dies in between is finished by the next.
A launch is found again if its answer was lost: the instance carries the worker's id as a tag
and the launch's client token is derived from the worker (and its retry generation), so EC2
returns the same instance instead of a second one; the next pass adopts it. Resources are
released (sessions terminated, labs deleted, ports freed) before the final move to TERMINATED.
A failing pass backs off on the row; a worker that cannot be launched or never gets ready is
FAILED after `LCM_MAX_RECONCILE_ATTEMPTS` (an admin retries or terminates it).
"""

import contextlib
import logging
from collections import deque
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from lcm import coordination, http, loops
from lcm.fsm import InvalidTransition
from lcm.reconcile import Result, backoff
from workers import labs, licensing
from workers.autoscaling import RECONCILER_ACTOR
from workers.clients.cml import cml_client_for
from workers.clients.ec2 import TAG_WORKER_ID, InstanceState, ec2_client
from workers.cml_urls import cml_url_for
from workers.models import (
    CMLWorker,
    ScaleAction,
    SystemSettings,
    WorkerStatusChange,
)
from workers.port_services import ports_release_worker
from workers.services import (
    scale_decision_record,
    worker_drain,
    worker_holding_sessions,
    worker_observe,
    worker_record_failure,
    worker_set_desired,
    worker_transition,
)
from workers.states import (
    WORKER_TRANSITIONS,
    DesiredStatus,
    LicenseStatus,
    WorkerStatus,
)

logger = logging.getLogger("lcm.workers.reconcilers")

W = WorkerStatus
D = DesiredStatus
LOOP = "workers"
ACTOR = RECONCILER_ACTOR
POLL_SECONDS = 2.0
LIVE_INSTANCE_STATES = [InstanceState.PENDING, InstanceState.RUNNING, InstanceState.STOPPING, InstanceState.STOPPED]
GONE_INSTANCE_STATES = {InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED}


# --- which workers need work (one query per tick) -------------------------------------------


def project_workers(ids, *, in_process: bool) -> None:
    """The projector of changed workers (`lcm.projection`): desired and actual status in coordination;
    in-process (no etcd, so no watcher), each one reconciled at once as the watcher would."""
    rows = list(CMLWorker.objects.filter(pk__in=ids).values_list("pk", "desired_status", "status"))
    coordination.project_workers(rows)
    if in_process:
        for pk, _desired, _status in rows:
            loops.enqueue("workers", str(pk))


def workers_needing_work(now=None) -> list:
    """Ids of workers the reconciler has something to do for now, found with one query."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.LCM_WORKER_SYNC_SECONDS)
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    needs = (
        Q(status__in=[W.PROVISIONING, W.STARTING, W.DRAINING, W.STOPPING, W.TERMINATING])
        | (Q(status=W.PENDING) & ~Q(desired_status=D.STOPPED))
        | (
            Q(status=W.RUNNING)
            & (
                ~Q(desired_status=D.RUNNING)
                | Q(metrics_collected_at__isnull=True)
                | Q(metrics_collected_at__lte=stale)
                | Q(license_status__in=[LicenseStatus.REGISTERING, LicenseStatus.DEREGISTERING])
            )
        )
        | (Q(status=W.STOPPED) & ~Q(desired_status=D.STOPPED))
        | Q(status=W.FAILED, desired_status=D.TERMINATED)
    )
    return [str(pk) for pk in CMLWorker.objects.filter(needs & due).order_by("created_at").values_list("pk", flat=True)]


# --- the reconciler ---------------------------------------------------------------------------


def reconcile_worker(worker_id) -> Result:
    """One pass for one worker: do the next step its status and desired status call for."""
    worker = CMLWorker.objects.select_related("template").filter(pk=worker_id).first()
    if worker is None:
        return Result.done("gone")
    now = timezone.now()
    if worker.next_attempt_at and worker.next_attempt_at > now:
        return Result.requeue((worker.next_attempt_at - now).total_seconds(), "backing off")
    handler = _HANDLERS.get(worker.status)
    if handler is None:
        return Result.done("nothing to do")
    result = handler(worker, now)
    if worker.attempts:
        worker_observe(worker, attempts=0, next_attempt_at=None)
    return result


def record_failure(worker_id, exc) -> float | None:
    """`on_error` hook: back off on the row; a worker that cannot get up after the attempt limit is FAILED."""
    worker = CMLWorker.objects.filter(pk=worker_id).first()
    if worker is None:
        return None
    error = f"{exc.__class__.__name__}: {exc}"
    attempts = worker.attempts + 1
    if attempts >= settings.LCM_MAX_RECONCILE_ATTEMPTS and worker.status in (W.PENDING, W.PROVISIONING, W.STARTING):
        with contextlib.suppress(InvalidTransition):
            worker_transition(
                worker,
                W.FAILED,
                actor=ACTOR,
                reason=f"gave up after {attempts} attempts: {error}"[:2000],
                last_error=error[:2000],
                attempts=0,
                next_attempt_at=None,
            )
            return None
    delay = backoff(attempts)
    worker_record_failure(worker, error, retry_in=delay)
    return delay.total_seconds()


def _reload(worker) -> CMLWorker:
    return CMLWorker.objects.select_related("template").get(pk=worker.pk)


def _move(worker, target: str, reason: str, **fields) -> CMLWorker:
    worker_transition(worker, target, actor=ACTOR, reason=reason, **fields)
    return _reload(worker)


def _path(source: str, target: str) -> list[str]:
    """The shortest legal sequence of statuses from `source` to `target` (SPEC §2.4 table), `source` excluded."""
    previous = {source: None}
    queue = deque([source])
    while queue:
        status = queue.popleft()
        if status == target:
            break
        for following in sorted(WORKER_TRANSITIONS.get(status, ())):
            if following not in previous:
                previous[following] = status
                queue.append(following)
    if target not in previous:
        return []
    path = []
    while target != source:
        path.append(target)
        target = previous[target]
    return path[::-1]


# --- EC2 helpers ------------------------------------------------------------------------------


def _ec2(worker):
    return ec2_client(worker.region or None)


def _instance(worker):
    """The worker's instance as EC2 reports it now; None when EC2 does not know it (any more)."""
    try:
        return _ec2(worker).describe_instance(worker.aws_instance_id)
    except http.NotFound:
        return None


def _gone(instance) -> bool:
    return instance is None or instance.state in GONE_INSTANCE_STATES


def _tagged_instances(worker) -> list:
    """Live instances tagged with this worker's id: a launch whose answer an earlier pass lost."""
    return _ec2(worker).describe_instances(tags={TAG_WORKER_ID: str(worker.pk)}, states=LIVE_INSTANCE_STATES)


def _client_token(worker) -> str:
    """Idempotency token of a launch: the same for every pass of one launch, new after a retry (FAILED → PENDING)."""
    generation = WorkerStatusChange.objects.filter(worker=worker, field="status", to_status=W.PENDING).count()
    return f"lcm-{worker.pk}-{generation}"


def _addresses(instance) -> dict:
    return {"private_ip": instance.private_ip, "public_ip": instance.public_ip}


# --- status handlers --------------------------------------------------------------------------


def _on_pending(worker, now) -> Result:
    if worker.desired_status == D.TERMINATED:
        for instance in _tagged_instances(worker):
            _ec2(worker).terminate(instance.id)
        _move(worker, W.TERMINATED, "terminated before it was launched")
        return Result.done("terminated")
    if worker.desired_status == D.STOPPED:
        return Result.done("not launched: desired STOPPED")
    template = worker.template or SystemSettings.load().default_worker_template
    if template is None:
        _move(worker, W.FAILED, "no template to launch from", last_error="the worker has no template and no default")
        return Result.done("failed")
    found = _tagged_instances(worker)
    if found:
        instance = found[0]
        reason = f"adopted instance {instance.id} from an earlier launch"
    else:
        images = _ec2(worker).find_images(template.ami_name_pattern)
        if not images:
            _move(
                worker,
                W.FAILED,
                f"no available AMI matches {template.ami_name_pattern!r}",
                last_error=f"no available AMI matches {template.ami_name_pattern!r}",
            )
            return Result.done("failed")
        image = images[0]
        instance = _ec2(worker).run_instance(
            image_id=image.id,
            instance_type=template.instance_type,
            name=worker.name,
            worker_id=str(worker.pk),
            client_token=_client_token(worker),
            validate_image=False,  # just found by find_images
        )
        reason = f"launched instance {instance.id} ({template.instance_type}) from {image.name}"
    worker = _move(
        worker,
        W.PROVISIONING,
        reason,
        aws_instance_id=instance.id,
        ami_id=instance.image_id,
        instance_type=instance.instance_type or template.instance_type,
        service_status="PROVISIONING",
        last_error="",
        **_addresses(instance),
    )
    return Result.requeue(0, "provisioning")


def _on_provisioning(worker, now) -> Result:
    instance = _instance(worker)
    if _gone(instance):
        return _vanished(worker, f"instance {worker.aws_instance_id} disappeared while provisioning")
    _move(worker, W.STARTING, f"instance {instance.state.value}", **_addresses(instance))
    return Result.requeue(0, "starting")


def _on_starting(worker, now) -> Result:
    if worker.aws_instance_id:
        instance = _instance(worker)
        if _gone(instance):
            return _vanished(worker, f"instance {worker.aws_instance_id} disappeared while starting")
        if instance.state == InstanceState.STOPPED and worker.desired_status == D.RUNNING:
            _ec2(worker).start(instance.id)
            return Result.requeue(POLL_SECONDS, "starting instance")
        if instance.state != InstanceState.RUNNING:
            return Result.requeue(POLL_SECONDS, f"instance {instance.state.value}")
        if (instance.private_ip, instance.public_ip) != (worker.private_ip, worker.public_ip):
            worker = worker_observe(worker, **_addresses(instance))
    if worker.desired_status != D.RUNNING:
        return _stop_or_terminate(worker, now, f"{worker.desired_status} requested while starting")
    if not worker.cml_base_url:
        worker = worker_observe(worker, cml_base_url=cml_url_for(worker))
    ready, info, why = _cml_ready(worker)
    if ready:
        _move(
            worker,
            W.RUNNING,
            f"CML {info.get('version', '')} ready",
            cml_version=str(info.get("version") or worker.cml_version),
            service_status="READY",
            last_activity_at=now,
        )
        return Result.requeue(0, "running")
    since = _since(worker, W.STARTING) or worker.updated_at
    limit = timedelta(minutes=settings.LCM_WORKER_READY_TIMEOUT_MINUTES)
    if now - since > limit:
        message = f"CML did not become ready within {limit.total_seconds() / 60:.0f} minutes: {why}"
        _move(worker, W.FAILED, message, last_error=message, service_status="NOT_READY")
        return Result.done("failed")
    worker_observe(worker, service_status="BOOTING" if info else "UNREACHABLE")
    return Result.requeue(POLL_SECONDS, f"waiting for CML: {why}")


def _cml_ready(worker) -> tuple[bool, dict, str]:
    """(ready, system_information, why not): the readiness gate. An unreachable CML is simply not ready yet."""
    try:
        info = cml_client_for(worker).system_information()
    except http.ExternalError as exc:
        return False, {}, str(exc)
    if not isinstance(info, dict):
        return False, {}, "system_information answered no object"
    return bool(info.get("ready")), info, "" if info.get("ready") else "system_information.ready is false"


def _since(worker, status: str):
    """When the worker last entered `status` (from its history)."""
    return (
        WorkerStatusChange.objects.filter(worker=worker, field="status", to_status=status)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )


def _on_running(worker, now) -> Result:
    if worker.desired_status != D.RUNNING:
        if worker_holding_sessions(worker).exists():
            worker_drain(worker, actor=ACTOR, reason=f"{worker.desired_status} requested: draining its sessions first")
            return Result.requeue(0, "draining")
        return _stop_or_terminate(worker, now, f"{worker.desired_status} requested")
    outcome = _check_instance(worker)
    if outcome is not None:
        return outcome
    if _sync_due(worker, now):
        _sync(worker, now)
    waiting = licensing.carry_out(_reload(worker), now)
    if waiting is not None:
        return Result.requeue(waiting, "licence in progress")
    return Result.done("in sync")


def _on_draining(worker, now) -> Result:
    holding = worker_holding_sessions(worker)
    if not holding.exists():
        if worker.desired_status == D.RUNNING:
            worker = worker_set_desired(worker, D.STOPPED, actor=ACTOR, reason="drain finished: stopped until started")
        return _stop_or_terminate(_reload(worker), now, "drained: no session left")
    outcome = _check_instance(worker)
    if outcome is not None:
        return outcome
    if worker.drain_deadline and now >= worker.drain_deadline:
        # Each session expires itself past the deadline (the lablet reconciler), then tears its lab down.
        return Result.requeue(POLL_SECONDS, f"drain deadline passed: {holding.count()} session(s) tearing down")
    if _sync_due(worker, now):
        _sync(worker, now)
    wait = settings.LCM_WORKER_SYNC_SECONDS
    if worker.drain_deadline:
        wait = min(wait, max(0.0, (worker.drain_deadline - now).total_seconds()))
    return Result.requeue(wait, f"draining: {holding.count()} session(s) left")


def _stop_or_terminate(worker, now, reason: str) -> Result:
    """Start stopping (or terminating) a worker that holds no session; the next pass carries it out."""
    if worker.desired_status == D.TERMINATED and W.TERMINATING in WORKER_TRANSITIONS[worker.status]:
        _move(worker, W.TERMINATING, reason)
        return Result.requeue(0, "terminating")
    _move(worker, W.STOPPING, reason, service_status="STOPPING")
    return Result.requeue(0, "stopping")


def _on_stopping(worker, now) -> Result:
    if worker.aws_instance_id:
        instance = _instance(worker)
        if _gone(instance):
            return _vanished(worker, f"instance {worker.aws_instance_id} disappeared while stopping")
        if instance.state == InstanceState.RUNNING:
            _ec2(worker).stop(instance.id)
            return Result.requeue(POLL_SECONDS, "stopping instance")
        if instance.state != InstanceState.STOPPED:
            return Result.requeue(POLL_SECONDS, f"instance {instance.state.value}")
    _move(
        worker,
        W.STOPPED,
        "instance stopped" if worker.aws_instance_id else "stopped",
        public_ip=None,
        service_status="STOPPED",
        cpu_percent=None,
        memory_percent=None,
        running_nodes=None,
    )
    return Result.requeue(0, "stopped")


def _on_stopped(worker, now) -> Result:
    if worker.desired_status == D.TERMINATED:
        _move(worker, W.TERMINATING, "terminate requested")
        return Result.requeue(0, "terminating")
    instance = _instance(worker) if worker.aws_instance_id else None
    if worker.aws_instance_id and _gone(instance):
        state = instance.state.value if instance is not None else "gone"
        return _vanished(worker, f"instance {worker.aws_instance_id} is {state}: terminated behind LCM's back")
    if worker.desired_status != D.RUNNING:
        return Result.done("stopped")
    if instance is not None:
        if instance.state == InstanceState.STOPPING:
            return Result.requeue(POLL_SECONDS, "instance still stopping")
        if instance.state == InstanceState.STOPPED:
            _ec2(worker).start(instance.id)
    _move(worker, W.STARTING, "start requested", service_status="STARTING")
    return Result.requeue(0, "starting")


def _on_terminating(worker, now) -> Result:
    if worker.aws_instance_id:
        instance = _instance(worker)
        if not _gone(instance):
            change = _ec2(worker).terminate(instance.id)
            if change.current != InstanceState.TERMINATED:
                return Result.requeue(POLL_SECONDS, "instance shutting down")
        elif instance is not None and instance.state == InstanceState.SHUTTING_DOWN:
            return Result.requeue(POLL_SECONDS, "instance shutting down")
    _release(worker, "the worker was terminated")
    reason = "instance terminated" if worker.aws_instance_id else "terminated"
    _move(worker, W.TERMINATED, reason, public_ip=None, service_status="TERMINATED")
    return Result.done("terminated")


def _on_failed(worker, now) -> Result:
    if worker.desired_status == D.TERMINATED:
        _move(worker, W.TERMINATING, "terminate requested")
        return Result.requeue(0, "terminating")
    return Result.done("failed: waiting for an admin")


def _check_instance(worker) -> Result | None:
    """Follow an instance changed behind LCM's back: gone → TERMINATED; stopped → STOPPING (started again if
    it should run). None when it is running as it should."""
    if not worker.aws_instance_id:
        return None
    instance = _instance(worker)
    if _gone(instance):
        state = instance.state.value if instance is not None else "gone"
        return _vanished(worker, f"instance {worker.aws_instance_id} is {state}: terminated behind LCM's back")
    if instance.state in (InstanceState.STOPPING, InstanceState.STOPPED):
        _move(worker, W.STOPPING, f"instance {instance.state.value} behind LCM's back", service_status="STOPPING")
        return Result.requeue(0, "instance stopped behind LCM's back")
    return None


def _vanished(worker, why: str) -> Result:
    """The instance is gone: nothing will bring it back. Desired TERMINATED, resources released, TERMINATED."""
    if worker.desired_status != D.TERMINATED:
        worker_set_desired(worker, D.TERMINATED, actor=ACTOR, reason=why)
    path = _path(worker.status, W.TERMINATED)
    if worker.status != W.TERMINATING:
        scale_decision_record(ScaleAction.VANISHED, reason=why, region=worker.region, worker=worker, actor=ACTOR)
    for target in path[:-1]:
        worker = _move(worker, target, why)
    _release(worker, why)
    _move(worker, W.TERMINATED, why, public_ip=None, service_status="TERMINATED")
    return Result.done("vanished")


def _release(worker, why: str) -> None:
    """Nothing stays allocated on a terminated worker: its labs DELETED and its ports freed. Its sessions
    terminate themselves when they see it TERMINATED (the lablet reconciler), releasing their LDS sessions."""
    labs.release_worker_labs(worker, actor=ACTOR, reason=why)
    ports_release_worker(worker)


# --- periodic sync: readiness, metrics, labs ---------------------------------------------------


def _sync_due(worker, now) -> bool:
    collected = worker.metrics_collected_at
    return collected is None or (now - collected).total_seconds() >= settings.LCM_WORKER_SYNC_SECONDS


def _sync(worker, now) -> None:
    """CML readiness, metrics and lab discovery; an unreachable CML is recorded, not raised."""
    cml = cml_client_for(worker)
    fields = {"metrics_collected_at": now}
    try:
        info = cml.system_information()
        fields["service_status"] = "READY" if info.get("ready") else "NOT_READY"
        if info.get("version"):
            fields["cml_version"] = str(info["version"])
        fields |= _metrics(worker, cml, now)
        labs.sync_labs(worker, cml, actor=ACTOR)
    except http.ExternalError as exc:
        logger.warning("worker %s: CML unreachable during sync: %s", worker.name, exc)
        fields["service_status"] = "UNREACHABLE"
    worker_observe(worker, **fields)


def _metrics(worker, cml, now) -> dict:
    """CPU and memory (CloudWatch when it has data, else CML `system_stats`), running nodes, and activity."""
    cloud_cpu = cloud_memory = None
    if worker.aws_instance_id:
        ec2 = _ec2(worker)
        try:
            cloud_cpu = ec2.cpu_utilization(worker.aws_instance_id)
            cloud_memory = ec2.memory_used_percent(worker.aws_instance_id)
        except http.ExternalError as exc:
            logger.info("worker %s: no CloudWatch metrics: %s", worker.name, exc)
    stats = cml.system_stats() or {}
    overall = stats.get("all") or {}
    cml_cpu = (overall.get("cpu") or {}).get("percent")
    memory = overall.get("memory") or {}
    cml_memory = round(100.0 * memory["used"] / memory["total"], 1) if memory.get("total") else None
    running_nodes = sum(
        int(((compute.get("stats") or {}).get("dominfo") or {}).get("running_nodes") or 0)
        for compute in (stats.get("computes") or {}).values()
    )
    fields = {
        "cpu_percent": cloud_cpu if cloud_cpu is not None else cml_cpu,
        "memory_percent": cloud_memory if cloud_memory is not None else cml_memory,
        "running_nodes": running_nodes,
    }
    if running_nodes or worker_holding_sessions(worker).exists():
        fields["last_activity_at"] = now
    return fields


_HANDLERS = {
    W.PENDING: _on_pending,
    W.PROVISIONING: _on_provisioning,
    W.STARTING: _on_starting,
    W.RUNNING: _on_running,
    W.DRAINING: _on_draining,
    W.STOPPING: _on_stopping,
    W.STOPPED: _on_stopped,
    W.TERMINATING: _on_terminating,
    W.FAILED: _on_failed,
}
