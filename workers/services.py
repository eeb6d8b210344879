"""Writers for workers (status, desired status, licence, drain, observations) and lab records; worker
templates have theirs in `workers.template_services`."""

import contextlib
import logging
import re
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from lcm.events import publish_change
from lcm.fsm import (
    InvalidTransition,
    actor_name,
    apply_transition,
    changed_fields,
    normalize_status,
    record_change,
    snapshot,
)
from sessions.states import capacity_holding_q
from workers.cml_urls import cml_url_problem
from workers.models import (
    CMLWorker,
    FleetSample,
    LabRecord,
    LicenseAction,
    LicenseRequest,
    Port,
    ScaleDecision,
    SystemSettings,
    WorkerStatusChange,
    WorkerTemplate,
)
from workers.port_services import ports_release
from workers.states import (
    LAB_TRANSITIONS,
    WORKER_TRANSITIONS,
    DesiredStatus,
    LabStatus,
    LicenseStatus,
    WorkerStatus,
)

logger = logging.getLogger("lcm.workers.services")

_CAPACITY_FIELDS = ("cpu_cores", "memory_gb", "storage_gb", "max_nodes", "port_range_start", "port_range_end")


# ---------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------


def _worker_values(template, fields: dict, errors: dict) -> dict:
    """A new worker's fields: the template's capacity, region, instance type and licence, then `fields`."""
    base = {}
    if template is not None:
        base = {k: getattr(template, k) for k in _CAPACITY_FIELDS}
        base |= {
            "region": template.region,
            "instance_type": template.instance_type,
            "license_type": template.license_type,
        }
    values = base | fields
    for key in _CAPACITY_FIELDS:
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            errors[key] = ["must be a non-negative whole number"]
    if values.get("cml_base_url") and (problem := cml_url_problem(values["cml_base_url"])):
        errors["cml_base_url"] = [problem]
    return values


def worker_create(
    *,
    name: str,
    actor,
    template: WorkerTemplate | None = None,
    status: str = WorkerStatus.PENDING,
    desired_status: str = DesiredStatus.RUNNING,
    reason: str = "",
    **fields,
) -> CMLWorker:
    """Create a worker, from a template (capacity copied, editable later) and/or explicit fields.

    A new EC2-backed worker starts PENDING; registering an existing CML endpoint may
    pass the status it is known to be in.
    """
    errors: dict[str, list[str]] = {}
    name = str(name or "").strip()
    if not name:
        errors["name"] = ["is required"]
    elif CMLWorker.objects.filter(name=name).exists():
        errors["name"] = [f"a worker named {name!r} already exists"]
    values = _worker_values(template, fields, errors)
    try:
        status = normalize_status(status, WorkerStatus)
        desired_status = normalize_status(desired_status, DesiredStatus)
    except ValueError as exc:
        errors["status"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            worker = CMLWorker.objects.create(
                name=name,
                template=template,
                status=status,
                desired_status=desired_status,
                created_by=actor_name(actor),
                **values,
            )
            record_change(
                WorkerStatusChange,
                worker_id=worker.pk,
                field="status",
                from_status="",
                to_status=status,
                actor=actor,
                reason=reason or "created",
            )
    except IntegrityError as exc:
        raise ValidationError({"name": [f"conflicts with an existing worker: {exc}"]}) from None
    publish_change("worker", worker.pk, "", status, actor=actor_name(actor), reason=reason or "created")
    return worker


def worker_transition(worker, target: str, *, actor, reason: str = "", **fields) -> CMLWorker:
    """Move a worker's actual status (reconciler, discovery, drain) under its row lock."""
    target = normalize_status(target, WorkerStatus)
    with transaction.atomic():
        locked = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
        previous = apply_transition(locked, WORKER_TRANSITIONS, target, entity="worker")
        for key, value in fields.items():
            setattr(locked, key, value)
        if target == WorkerStatus.RUNNING:
            locked.drain_started_at = locked.drain_deadline = None
        locked.save()
        record_change(
            WorkerStatusChange,
            worker_id=locked.pk,
            field="status",
            from_status=previous,
            to_status=target,
            actor=actor,
            reason=reason,
        )
    publish_change("worker", locked.pk, previous, target, actor=actor_name(actor), reason=reason)
    return locked


def worker_drain(worker, *, actor, reason: str = "", timeout_minutes: int | None = None) -> CMLWorker:
    """RUNNING → DRAINING: the worker takes no new sessions; at the deadline the remaining ones expire."""
    now = timezone.now()
    minutes = timeout_minutes if timeout_minutes is not None else SystemSettings.load().drain_timeout_minutes
    return worker_transition(
        worker,
        WorkerStatus.DRAINING,
        actor=actor,
        reason=reason or "drain",
        drain_started_at=now,
        drain_deadline=now + timedelta(minutes=minutes),
    )


def worker_cancel_drain(worker, *, actor, reason: str = "") -> CMLWorker:
    """DRAINING → RUNNING, and only from DRAINING (the table also lets a booting worker become RUNNING)."""
    with transaction.atomic():
        locked = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
        if locked.status != WorkerStatus.DRAINING:
            raise InvalidTransition(
                "worker",
                locked.status,
                WorkerStatus.RUNNING,
                [],
                detail=f"worker {locked.name} is {locked.status}, not DRAINING: there is no drain to cancel",
            )
        return worker_transition(locked, WorkerStatus.RUNNING, actor=actor, reason=reason or "drain cancelled")


def worker_set_desired(worker, desired: str, *, actor, reason: str = "") -> CMLWorker:
    """Record what an admin wants (RUNNING/STOPPED/TERMINATED); the worker reconciler makes it so."""
    desired = normalize_status(desired, DesiredStatus)
    with transaction.atomic():
        locked = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
        previous = locked.desired_status
        if previous != desired:
            locked.desired_status = desired
            locked.save(update_fields=["desired_status", "updated_at"])
            record_change(
                WorkerStatusChange,
                worker_id=locked.pk,
                field="desired_status",
                from_status=previous,
                to_status=desired,
                actor=actor,
                reason=reason,
            )
    if previous != desired:
        publish_change("worker.desired", locked.pk, previous, desired, actor=actor_name(actor), reason=reason)
    return locked


# ---------------------------------------------------------------------------------------
# Lab records
# ---------------------------------------------------------------------------------------


def lab_record_create(
    *,
    worker,
    actor,
    definition=None,
    cml_lab_id: str = "",
    title: str = "",
    status=LabStatus.IMPORTING,
    node_count=0,
    pk=None,
    active_session=None,
) -> LabRecord:
    """Record a CML lab on a worker (being imported, or discovered there).

    `pk` lets the caller name the record before it exists (an import is titled after it);
    `active_session` binds it to the session it is made for.
    """
    status = normalize_status(status, LabStatus)
    # Only a CML id can collide (one record per lab on a worker): without one there is no need for the
    # savepoint that lets a collision be reported while the caller's transaction goes on.
    try:
        with transaction.atomic() if cml_lab_id else contextlib.nullcontext():
            record = LabRecord.objects.create(
                **({"pk": pk} if pk is not None else {}),
                worker=worker,
                definition=definition,
                cml_lab_id=cml_lab_id,
                title=title,
                status=status,
                node_count=node_count,
                active_session=active_session,
            )
    except IntegrityError:
        if not cml_lab_id:
            raise
        raise ValidationError({"cml_lab_id": [f"lab {cml_lab_id} is already recorded on {worker.name}"]}) from None
    publish_change("lab_record", record.pk, "", status, actor=actor_name(actor), reason="recorded")
    return record


def lab_record_transition(record, target: str, *, actor, reason: str = "", via=(), **fields) -> LabRecord:
    """Move a lab record's status (and set observed fields such as `cml_state`) under its row lock.

    `via`: statuses to pass through first, each an FSM step of its own, all in one transaction (a
    lab found converged right after its start goes STARTING → BOOTED at once). Deleting a lab
    releases its ports in the same transaction.
    """

    target = normalize_status(target, LabStatus)
    steps = [normalize_status(step, LabStatus) for step in via] + [target]
    with transaction.atomic():
        locked = LabRecord.objects.select_for_update().get(pk=getattr(record, "pk", record))
        before_step = snapshot(locked)
        moves = [(apply_transition(locked, LAB_TRANSITIONS, step, entity="lab"), step) for step in steps]
        for key, value in fields.items():
            setattr(locked, key, value)
        if target == LabStatus.DELETED:
            ports_release(locked)
            locked.active_session = None
        locked.save(update_fields=changed_fields(locked, before_step))
    for previous, step in moves:
        publish_change("lab_record", locked.pk, previous, step, actor=actor_name(actor), reason=reason)
    return locked


# ---------------------------------------------------------------------------------------
# Admin intents from the REST API: checked desired state, licence registration
# ---------------------------------------------------------------------------------------

# Workers that are gone or going: they can only be asked to terminate.
_ENDING = {WorkerStatus.TERMINATING, WorkerStatus.TERMINATED}

# Licence intents and the licence states they may start from; the worker reconciler carries them
# out against CML (`POST /licensing/registration`, poll `GET /licensing`) and records the outcome.
LICENSE_REQUESTS: dict[str, set[str]] = {
    LicenseStatus.REGISTERING: {LicenseStatus.UNREGISTERED, LicenseStatus.FAILED},
    LicenseStatus.DEREGISTERING: {LicenseStatus.REGISTERED, LicenseStatus.FAILED},
}


def worker_request_desired(worker, desired: str, *, actor, reason: str = "") -> CMLWorker:
    """An admin's Start/Stop/Terminate: `worker_set_desired`, refusing what can no longer happen.

    RUNNING or STOPPED for a worker that is terminating, terminated or already asked to
    terminate raises InvalidTransition (HTTP 409); TERMINATED is always accepted (idempotent).
    """
    desired = normalize_status(desired, DesiredStatus)
    with transaction.atomic():
        locked = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
        ending = locked.status in _ENDING or locked.desired_status == DesiredStatus.TERMINATED
        if desired != DesiredStatus.TERMINATED and ending:
            raise InvalidTransition(
                "worker",
                locked.status,
                desired,
                [] if locked.status == WorkerStatus.TERMINATED else [DesiredStatus.TERMINATED],
                detail=f"worker {locked.name} is {locked.status} (desired {locked.desired_status}): it cannot "
                f"be asked for {desired} any more",
            )
        return worker_set_desired(locked, desired, actor=actor, reason=reason)


def worker_license_request(worker, target: str, *, actor, reason: str = "") -> CMLWorker:
    """Ask for licence registration (target REGISTERING) or deregistration (DEREGISTERING): an async intent.

    Sets `license_status`, clears `license_error` and writes a history row (field
    `license_status`) in one transaction. Refused (InvalidTransition, HTTP 409) from a
    licence state the intent cannot start from (LICENSE_REQUESTS), or on a worker that is
    terminating or terminated. The registration token itself is not stored here: it is
    never written to history or logs.
    """
    target = normalize_status(target, LicenseStatus)
    if target not in LICENSE_REQUESTS:
        raise ValidationError({"license_status": [f"must be one of {', '.join(sorted(LICENSE_REQUESTS))}"]})
    with transaction.atomic():
        locked = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
        previous = locked.license_status
        allowed = sorted(t for t, sources in LICENSE_REQUESTS.items() if previous in sources)
        if locked.status in _ENDING or previous not in LICENSE_REQUESTS[target]:
            raise InvalidTransition(
                "worker licence",
                previous,
                target,
                [] if locked.status in _ENDING else allowed,
                detail=f"worker {locked.name} is {locked.status} with licence {previous}: cannot start {target}",
            )
        locked.license_status = target
        locked.license_error = ""
        locked.save(update_fields=["license_status", "license_error", "updated_at"])
        record_change(
            WorkerStatusChange,
            worker_id=locked.pk,
            field="license_status",
            from_status=previous,
            to_status=target,
            actor=actor,
            reason=reason or f"licence {target.lower()} requested",
        )
    publish_change("worker.license", locked.pk, previous, target, actor=actor_name(actor), reason=reason)
    return locked


# ---------------------------------------------------------------------------------------
# Fleet: what the worker reconciler, the autoscaler and discovery write
# ---------------------------------------------------------------------------------------

# Fields the worker reconciler observes (EC2, CML, metrics, backoff): not states, so no history row.
OBSERVED_FIELDS = frozenset(
    {
        "aws_instance_id", "ami_id", "instance_type", "public_ip", "private_ip", "cml_base_url", "cml_version",
        "service_status", "cpu_percent", "memory_percent", "running_nodes", "metrics_collected_at",
        "last_activity_at", "attempts", "last_error", "next_attempt_at",
    }
)  # fmt: skip


def worker_observe(worker, **fields) -> CMLWorker:
    """Store what the reconciler observed about a worker (addresses, CML version, metrics, backoff) under its row lock.

    Only `OBSERVED_FIELDS`; status, desired status and licence status have their own services.
    """
    unknown = set(fields) - OBSERVED_FIELDS
    if unknown:
        raise ValueError(f"not observed worker fields: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        locked = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
        changed = [name for name, value in fields.items() if getattr(locked, name) != value]
        for name in changed:
            setattr(locked, name, fields[name])
        if changed:
            locked.save(update_fields=[*changed, "updated_at"])
    return locked


def worker_record_failure(worker, error: str, *, retry_in: timedelta) -> CMLWorker:
    """Record a failed reconcile pass of a worker and when to retry (the backoff lives on the row)."""
    with transaction.atomic():
        locked = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
        locked.attempts += 1
        locked.last_error = error[:2000]
        locked.next_attempt_at = timezone.now() + retry_in
        locked.save(update_fields=["attempts", "last_error", "next_attempt_at", "updated_at"])
    return locked


def worker_holding_sessions(worker):
    """The sessions that hold capacity on a worker (SPEC §2.2): what a drain waits for."""
    return CMLWorker(pk=getattr(worker, "pk", worker)).sessions.filter(capacity_holding_q())


def worker_drain_if_idle(worker, *, actor, reason: str = "") -> CMLWorker | None:
    """Scale-down: RUNNING → DRAINING, only if the worker still holds no session (checked under its row lock,
    which placement also takes, so no session lands on it in between). None when it is no longer idle."""
    with transaction.atomic():
        locked = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
        if locked.status != WorkerStatus.RUNNING or worker_holding_sessions(locked).exists():
            return None
        return worker_drain(locked, actor=actor, reason=reason)


def worker_pause_if_idle(worker, *, actor, reason: str = "") -> CMLWorker | None:
    """Idle auto-pause: desired STOPPED and RUNNING → STOPPING in one step, only if the worker still holds no
    session (under its row lock). The worker reconciler then stops the instance. None when it is not idle."""
    with transaction.atomic():
        locked = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
        if (
            locked.status != WorkerStatus.RUNNING
            or locked.desired_status != DesiredStatus.RUNNING
            or worker_holding_sessions(locked).exists()
        ):
            return None
        worker_set_desired(locked, DesiredStatus.STOPPED, actor=actor, reason=reason)
        return worker_transition(locked, WorkerStatus.STOPPING, actor=actor, reason=reason)


def worker_license_register(worker, token: str, *, actor, reason: str = "") -> CMLWorker:
    """An admin's licence registration with its token: `worker_license_request(REGISTERING)` plus the
    `LicenseRequest` holding the token for the worker reconciler, in one transaction.

    The token is checked for CML's shape (1–256 of letters, digits, `+/%=-`); it is never logged or
    written to history, and is blanked once CML has accepted it.
    """
    token = str(token or "").strip()
    if not re.fullmatch(r"[a-zA-Z\d+/%=-]{1,256}", token):
        raise ValidationError({"token": ["must be 1 to 256 letters, digits or + / % = -"]})
    with transaction.atomic():
        locked = worker_license_request(worker, LicenseStatus.REGISTERING, actor=actor, reason=reason)
        LicenseRequest.objects.create(
            worker=locked, action=LicenseAction.REGISTER, token=token, requested_by=actor_name(actor)
        )
    return locked


def worker_license_deregister(worker, *, actor, reason: str = "") -> CMLWorker:
    """An admin's licence deregistration: `worker_license_request(DEREGISTERING)` plus its `LicenseRequest`."""
    with transaction.atomic():
        locked = worker_license_request(worker, LicenseStatus.DEREGISTERING, actor=actor, reason=reason)
        LicenseRequest.objects.create(worker=locked, action=LicenseAction.DEREGISTER, requested_by=actor_name(actor))
    return locked


def license_request_submitted(request) -> None:
    """CML accepted the request (registration continues asynchronously): note when, and forget the token."""
    LicenseRequest.objects.filter(pk=request.pk, submitted_at__isnull=True).update(
        submitted_at=timezone.now(), token=""
    )


def worker_license_outcome(worker, status: str, *, actor, error: str = "", reason: str = "") -> CMLWorker:
    """Record how a licence intent ended: `license_status` (REGISTERED, UNREGISTERED or FAILED), the error
    shown on the worker page, a history row, and the open `LicenseRequest`s closed (tokens blanked)."""
    status = normalize_status(status, LicenseStatus)
    with transaction.atomic():
        locked = CMLWorker.objects.select_for_update().get(pk=getattr(worker, "pk", worker))
        previous = locked.license_status
        locked.license_status = status
        locked.license_error = error[:2000]
        locked.save(update_fields=["license_status", "license_error", "updated_at"])
        if previous != status:
            record_change(
                WorkerStatusChange,
                worker_id=locked.pk,
                field="license_status",
                from_status=previous,
                to_status=status,
                actor=actor,
                reason=reason or error,
            )
        LicenseRequest.objects.filter(worker=locked, finished_at__isnull=True).update(
            finished_at=timezone.now(), outcome=status, error=error[:2000], token=""
        )
    if previous != status:
        publish_change("worker.license", locked.pk, previous, status, actor=actor_name(actor), reason=reason)
    return locked


def lab_record_reserve_ports(record, ports: dict[str, int]) -> dict[str, int]:
    """Reserve ports a lab LCM did not create already uses (lab discovery), so allocation never hands them out.

    Ports outside the worker's range, or held by another lab, are skipped; returns what was reserved.
    """
    worker = record.worker
    reserved: dict[str, int] = {}
    for name, port in ports.items():
        if not worker.port_range_start <= port <= worker.port_range_end:
            continue
        try:
            with transaction.atomic():
                Port.objects.create(worker=worker, port=port, lab_record=record, name=name[:200])
        except IntegrityError:
            logger.warning("port %s of discovered lab %s on %s is already held", port, record.pk, worker.name)
            continue
        reserved[name] = port
    return reserved


def scale_decision_record(
    action: str,
    *,
    reason: str,
    region: str = "",
    template=None,
    worker=None,
    sessions=(),
    actor: str = "autoscaler",
):
    """Store one autoscaler or discovery decision with its reason (shown on the scheduler page) and log it."""
    decision = ScaleDecision.objects.create(
        action=action,
        reason=reason,
        region=region,
        template=template,
        worker=worker,
        sessions=[str(s) for s in sessions],
        actor=actor,
    )
    logger.info(
        "fleet decision %s%s%s: %s",
        action,
        f" {worker.name}" if worker is not None else "",
        f" ({len(decision.sessions)} sessions)" if decision.sessions else "",
        reason,
        extra={"action": action, "region": region},
    )
    return decision


def fleet_sample_record(totals: dict, *, at=None, keep_days: int = 8) -> FleetSample:
    """Record the fleet's utilisation (`{resource: (used, total)}` plus `workers`) and drop samples past `keep_days`."""
    at = at or timezone.now()
    fields = {"workers": totals.get("workers", 0)}
    for resource in ("cpu", "memory", "storage", "nodes"):
        fields[f"{resource}_used"], fields[f"{resource}_total"] = totals.get(resource, (0, 0))
    sample = FleetSample.objects.create(at=at, **fields)
    FleetSample.objects.filter(at__lt=at - timedelta(days=keep_days)).delete()
    return sample
