"""The discovery loop: EC2 instances the database does not know become workers (SPEC §3.6 Discovery).

`discovery_tick()` is the "discovery" loop (singleton). EC2 instances with LCM's tags or of the CML AMI
pattern that the database does not know are imported as workers; workers whose instance vanished are
reconciled at once (the worker reconciler walks them to TERMINATED).
"""

import logging
import re
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone

from lcm import reconcile
from lcm.coordination import coordinator
from workers.clients.ec2 import TAG_MANAGED_BY, TAG_WORKER_ID, InstanceState, ec2_client
from workers.models import CMLWorker, ScaleAction, SystemSettings, WorkerTemplate
from workers.reconcilers import LOOP, reconcile_worker, record_failure
from workers.services import scale_decision_record, worker_create
from workers.states import DesiredStatus, WorkerStatus

logger = logging.getLogger("lcm.workers.discovery")

W = WorkerStatus
A = ScaleAction
DISCOVERY_ACTOR = "discovery"
DISCOVERY_LAST_RUN_KEY = "/lcm/fleet/discovery/last_run"

# Instances in these states are machines LCM could use; others are gone or going.
_LIVE_STATES = ("pending", "running", "stopping", "stopped")
# Worker statuses in which a worker's instance must exist.
_HAS_INSTANCE = {W.PROVISIONING, W.STARTING, W.RUNNING, W.DRAINING, W.STOPPING, W.STOPPED}


def discovery_tick(*, force: bool = False, require_leader: bool = True) -> dict:
    """Import EC2 instances the database does not know (LCM tags or the CML AMI pattern) and reconcile at once
    the workers whose instance vanished. Runs every `discovery_interval_minutes` unless `force`.

    Returns `{"imported": [worker names], "vanished": [worker names]}`.
    """
    report: dict[str, list[str]] = {"imported": [], "vanished": []}
    policy = SystemSettings.load()
    if not force and not policy.discovery_enabled:
        return report
    if require_leader and not coordinator().try_lead("discovery"):
        return report
    now = timezone.now()
    if not force and not _discovery_due(now, policy.discovery_interval_minutes):
        return report
    ec2 = ec2_client()
    instances = ec2.describe_instances()  # every instance of the account in the region, terminated ones included
    with_instance = CMLWorker.objects.exclude(aws_instance_id__isnull=True).exclude(aws_instance_id="")
    known = {worker.aws_instance_id: worker for worker in with_instance}
    report["imported"] = _import_unknown(ec2, instances, known, policy.discovery_ami_pattern)
    report["vanished"] = _reconcile_vanished(instances, known)
    _discovery_ran(now)
    return report


def _import_unknown(ec2, instances, known: dict, pattern: str) -> list[str]:
    """Import the live instances no worker knows that carry LCM's tags or run a CML AMI; their worker names."""
    images = {image.id for image in ec2.find_images(pattern)} if pattern else set()
    launching = CMLWorker.objects.filter(status=W.PENDING, aws_instance_id__isnull=True).values_list("pk", flat=True)
    waiting_for_adoption = {str(pk) for pk in launching}
    imported = []
    for instance in instances:
        if instance.id in known or instance.state.value not in _LIVE_STATES:
            continue
        ours = instance.managed_by == ec2.managed_by
        if not ours and instance.image_id not in images:
            continue
        if instance.worker_id in waiting_for_adoption:
            continue  # launched by a worker whose reconciler has not recorded it yet: it adopts it by tag
        imported.append(_import_instance(ec2, instance, ours).name)
    return imported


def _reconcile_vanished(instances, known: dict) -> list[str]:
    """Reconcile at once the workers whose instance is gone (or going); their names."""
    by_id = {instance.id: instance for instance in instances}
    vanished = []
    for instance_id, worker in known.items():
        if worker.status not in _HAS_INSTANCE:
            continue
        instance = by_id.get(instance_id)
        if instance is None or instance.state in (InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED):
            vanished.append(worker.name)
            _reconcile_now(worker)
    return vanished


def _discovery_due(now, interval_minutes: int) -> bool:
    """Whether the last discovery run is older than the interval (kept in coordination: losing it only means
    one early run)."""
    try:
        last = coordinator().get(DISCOVERY_LAST_RUN_KEY)
    except Exception:  # coordination down: run (discovery is idempotent)
        return True
    if not last:
        return True
    try:
        last_at = datetime.fromisoformat(last)
    except ValueError:
        return True
    return now - last_at >= timedelta(minutes=interval_minutes)


def _discovery_ran(now) -> None:
    try:
        coordinator().put_if_changed(DISCOVERY_LAST_RUN_KEY, now.astimezone(UTC).isoformat())
    except Exception:  # coordination down: the next tick runs again, harmlessly
        logger.warning("could not record the discovery run in coordination")


def _import_instance(ec2, instance, ours: bool) -> CMLWorker:
    """A worker for an instance LCM did not know: named after the instance, capacity from the template of its
    instance type (else the default template), tagged as LCM's from now on."""
    template = (
        WorkerTemplate.objects.filter(instance_type=instance.instance_type, enabled=True).first()
        or SystemSettings.load().default_worker_template
    )
    # A worker name is also its virtual CML's name in the simulator: letters, digits, '.', '_', '-'.
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", instance.name or "").strip("-")[:80] or f"discovered-{instance.id}"
    name = base if not CMLWorker.objects.filter(name=base).exists() else f"{base}-{instance.id}"[:100]
    status = {
        InstanceState.PENDING: W.STARTING,
        InstanceState.RUNNING: W.STARTING,
        InstanceState.STOPPING: W.STOPPING,
        InstanceState.STOPPED: W.STOPPED,
    }[instance.state]
    desired = DesiredStatus.RUNNING if status == W.STARTING else DesiredStatus.STOPPED
    origin = "with LCM's tags" if ours else f"of the CML AMI {instance.image_id}"
    reason = f"discovered {instance.state.value} instance {instance.id} {origin} that no worker knew"
    with transaction.atomic():
        worker = worker_create(
            name=name,
            actor=DISCOVERY_ACTOR,
            template=template,
            status=status,
            desired_status=desired,
            reason=reason,
            aws_instance_id=instance.id,
            ami_id=instance.image_id,
            instance_type=instance.instance_type,
            private_ip=instance.private_ip,
            public_ip=instance.public_ip,
        )
        scale_decision_record(
            A.DISCOVER, reason=reason, region=worker.region, template=template, worker=worker, actor=DISCOVERY_ACTOR
        )
    try:
        ec2.set_tags(instance.id, {TAG_WORKER_ID: str(worker.pk), TAG_MANAGED_BY: ec2.managed_by})
    except Exception as exc:  # the tags help the next discovery; the worker is imported either way
        logger.warning("could not tag discovered instance %s: %s", instance.id, exc)
    return worker


def _reconcile_now(worker) -> None:
    """One worker reconcile pass right away, under the key lock the workers loop uses."""

    reconcile.run(LOOP, str(worker.pk), reconcile_worker, record_failure)
