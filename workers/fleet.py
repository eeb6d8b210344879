"""Fleet glue: the autoscaler and discovery loops (database in, decisions out) and how a worker's CML is reached.

- `autoscale_tick()`: the "autoscaler" loop (a singleton behind a leader lease). Reads the eligible
  PENDING sessions, every worker's capacity and the enabled templates in a few queries, asks the
  pure `workers.autoscaler.plan` what to do, and carries each decision out through the services
  (`worker_create`, `worker_set_desired`, `worker_cancel_drain`, `worker_drain_if_idle`,
  `worker_pause_if_idle`), recording it with its reason in `ScaleDecision`. The worker reconciler
  then does the EC2 and CML work. A crash between two decisions loses nothing: the next tick
  plans again from the database, and a launched worker counts as coming capacity from the
  moment its row exists, so a demand never starts two workers.
- `discovery_tick()`: the "discovery" loop (singleton). EC2 instances with LCM's tags or of the CML
  AMI pattern that the database does not know are imported as workers; workers whose instance
  vanished are reconciled at once (the worker reconciler walks them to TERMINATED).
- `cml_url_for(worker)` / `ensure_simulated_cml(worker)`: a launched instance's CML address comes
  from `LCM_CML_URL_TEMPLATE`; when that address is a virtual CML of the CML simulator, the
  virtual CML is created (`POST /_sim/workers {"name"}`) once the instance runs, so it warms up
  like a real controller booting after its machine.
"""

import logging
import re
import uuid
from datetime import UTC, datetime, timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import Max, OuterRef, Q, Subquery
from django.utils import timezone

from lcm.coordination import coordinator
from lcm.fsm import InvalidTransition
from lcm.http import Unavailable
from workers.autoscaler import Decision, PendingSession, Policy, TemplateOption, WorkerState, ami_version_hint, plan
from workers.models import CMLWorker, ScaleAction, ScaleDecision, WorkerStatusChange, WorkerTemplate
from workers.services import (
    scale_decision_record,
    worker_cancel_drain,
    worker_create,
    worker_drain_if_idle,
    worker_pause_if_idle,
    worker_set_desired,
)
from workers.states import DesiredStatus, WorkerStatus

logger = logging.getLogger("lcm.workers.fleet")

W = WorkerStatus
A = ScaleAction
AUTOSCALER_ACTOR = "autoscaler"
IDLE_ACTOR = "idle-detector"
DISCOVERY_ACTOR = "discovery"
RECONCILER_ACTOR = "worker-reconciler"
# Who may stop a worker and start it again on demand: LCM itself, never on an admin's behalf.
LCM_STOPPERS = {AUTOSCALER_ACTOR, IDLE_ACTOR}
DISCOVERY_LAST_RUN_KEY = "/lcm/fleet/discovery/last_run"
# A demand that keeps waiting for the same reason is recorded once per this long, not on every tick.
WAIT_REPEAT_AFTER = timedelta(minutes=10)


# --- where a worker's CML lives ----------------------------------------------------------


def cml_url_for(worker) -> str:
    """The CML base URL of a worker's instance, from `LCM_CML_URL_TEMPLATE` (fields: name, worker_id,
    instance_id, private_ip, public_ip, address = public or private IP); empty template = the CML simulator."""
    template = settings.LCM_CML_URL_TEMPLATE or f"{settings.LCM_CML_SIMULATOR_URL.rstrip('/')}/w/{{name}}"
    return template.format(
        name=worker.name,
        worker_id=worker.pk,
        instance_id=worker.aws_instance_id or "",
        private_ip=worker.private_ip or "",
        public_ip=worker.public_ip or "",
        address=worker.public_ip or worker.private_ip or "",
    ).rstrip("/")


def simulated_cml_name(url: str) -> str | None:
    """The virtual CML's name when `url` is one of the CML simulator's (`<simulator>/w/<name>`), else None."""
    prefix = f"{settings.LCM_CML_SIMULATOR_URL.rstrip('/')}/w/"
    if url and url.startswith(prefix):
        return url[len(prefix) :].strip("/") or None
    return None


def ensure_simulated_cml(worker) -> None:
    """Create the worker's virtual CML in the simulator if its address is one (idempotent: 200 when it exists).

    Raises `Unavailable` when the simulator does not answer: the worker simply is not ready yet.
    """
    name = simulated_cml_name(worker.cml_base_url)
    if name is None:
        return
    url = f"{settings.LCM_CML_SIMULATOR_URL.rstrip('/')}/_sim/workers"
    try:
        response = requests.post(
            url,
            json={"name": name},
            timeout=(settings.LCM_HTTP_CONNECT_TIMEOUT, settings.LCM_HTTP_READ_TIMEOUT),
        )
    except requests.RequestException as exc:
        raise Unavailable("cml-simulator", "create_worker", exc.__class__.__name__) from None
    if response.status_code not in (200, 201):
        raise Unavailable("cml-simulator", "create_worker", f"HTTP {response.status_code}", response.status_code)


# --- reading the fleet ---------------------------------------------------------------------


def template_option(template: WorkerTemplate) -> TemplateOption:
    return TemplateOption(
        id=str(template.pk),
        name=template.name,
        region=template.region,
        license_type=template.license_type,
        cpu_cores=template.cpu_cores,
        memory_gb=template.memory_gb,
        storage_gb=template.storage_gb,
        max_nodes=template.max_nodes,
        ports=template.port_range_end - template.port_range_start + 1,
        startup_minutes=template.startup_minutes,
        cost_per_hour=float(template.cost_per_hour),
        cml_version=ami_version_hint(template.ami_name_pattern),
    )


def stopped_by(worker_ids) -> dict[str, str]:
    """`{worker id: actor}` of whoever last asked each worker to stop (a drain or desired STOPPED), the worker
    reconciler's own follow-ups (it stops a drained worker) not counted."""
    rows = (
        WorkerStatusChange.objects.filter(worker_id__in=list(worker_ids))
        .filter(Q(field="status", to_status=W.DRAINING) | Q(field="desired_status", to_status=DesiredStatus.STOPPED))
        .exclude(actor=RECONCILER_ACTOR)
        .order_by("worker_id", "-at", "-id")
        .values_list("worker_id", "actor")
    )
    found: dict[str, str] = {}
    for worker_id, actor in rows:
        found.setdefault(str(worker_id), actor)
    return found


def fleet_states(now=None) -> list[WorkerState]:
    """Every worker that is not TERMINATED, with its capacity and what scaling needs, in three queries."""
    from scheduling.selectors import worker_capacities
    from sessions.models import LabletSession

    now = now or timezone.now()
    running_since = (
        WorkerStatusChange.objects.filter(worker=OuterRef("pk"), field="status", to_status=W.RUNNING)
        .order_by("-at")
        .values("at")[:1]
    )
    last_session = LabletSession.objects.filter(worker=OuterRef("pk")).order_by("-updated_at").values("updated_at")[:1]
    rows = list(
        CMLWorker.objects.exclude(status=W.TERMINATED)
        .annotate(running_since=Subquery(running_since), last_session_at=Subquery(last_session))
        .values(
            "id",
            "status",
            "region",
            "desired_status",
            "last_activity_at",
            "idle_detection_enabled",
            "created_at",
            "template__cost_per_hour",
            "running_since",
            "last_session_at",
        )
    )
    capacities = worker_capacities([r["id"] for r in rows])
    stoppable = [r["id"] for r in rows if r["status"] in (W.DRAINING, W.STOPPING, W.STOPPED)]
    stoppers = stopped_by(stoppable) if stoppable else {}
    states = []
    for r in rows:
        worker_id = str(r["id"])
        times = [t for t in (r["running_since"], r["last_session_at"]) if t is not None]
        lcm_stopped = (
            r["desired_status"] != DesiredStatus.TERMINATED
            and r["status"] in (W.DRAINING, W.STOPPING, W.STOPPED)
            and stoppers.get(worker_id) in LCM_STOPPERS
        )
        states.append(
            WorkerState(
                capacity=capacities[worker_id],
                region=r["region"],
                desired_status=r["desired_status"],
                lcm_stopped=lcm_stopped,
                empty_since=max(times) if times else r["created_at"],
                up_since=r["running_since"] or r["created_at"],
                last_activity_at=r["last_activity_at"],
                idle_detection_enabled=r["idle_detection_enabled"],
                cost_per_hour=float(r["template__cost_per_hour"] or 0),
            )
        )
    return states


def pending_sessions(now=None, limit: int = 1000) -> list[PendingSession]:
    """The PENDING sessions due within the placement lead (what placement is trying to place), soonest first."""
    from scheduling.capacity import Demand
    from sessions.models import LabletSession
    from sessions.states import SessionStatus
    from workers.models import SystemSettings

    now = now or timezone.now()
    lead = timedelta(minutes=SystemSettings.load().placement_lead_minutes)
    rows = (
        LabletSession.objects.select_related("definition")
        .filter(status=SessionStatus.PENDING, timeslot_start__lte=now + lead, timeslot_end__gt=now)
        .order_by("timeslot_start", "created_at")[:limit]
    )
    demands: dict = {}
    pending = []
    for session in rows:
        definition = session.definition
        if definition.pk not in demands:
            demands[definition.pk] = Demand.of(definition)
        pending.append(
            PendingSession(
                id=str(session.pk),
                demand=demands[definition.pk],
                start=session.timeslot_start,
                cml_version_min=definition.cml_version_min,
                cml_version_max=definition.cml_version_max,
            )
        )
    return pending


def last_scale_up() -> dict[str, datetime]:
    """The time of the latest LAUNCH or START per region (the cooldowns count from it)."""
    rows = (
        ScaleDecision.objects.filter(action__in=[A.LAUNCH, A.START])
        .values("region")
        .annotate(latest=Max("at"))
        .values_list("region", "latest")
    )
    return dict(rows)


# --- the autoscaler loop -------------------------------------------------------------------


def autoscale_tick(*, now=None, require_leader: bool = True) -> list[Decision]:
    """One autoscaler tick: plan from the database, carry the decisions out, record them. Returns what was done."""
    from workers.models import SystemSettings

    if require_leader and not coordinator().try_lead("autoscaler"):
        return []
    now = now or timezone.now()
    templates = {str(t.pk): t for t in WorkerTemplate.objects.filter(enabled=True)}
    decisions = plan(
        now,
        pending_sessions(now),
        fleet_states(now),
        [template_option(t) for t in templates.values()],
        Policy.from_settings(SystemSettings.load()),
        last_scale_up=last_scale_up(),
    )
    done = []
    for decision in decisions:
        try:
            if _apply(decision, templates):
                done.append(decision)
        except InvalidTransition as exc:
            # The worker moved on since it was read (an admin, the reconciler): the next tick plans again.
            logger.info("autoscaler skipped %s of %s: %s", decision.action, decision.worker_name, exc.detail)
    return done


def _apply(decision: Decision, templates: dict) -> bool:
    """Carry one decision out and record it; False when it no longer applies (or is a repeated WAIT)."""
    common = {"reason": decision.reason, "region": decision.region, "sessions": decision.sessions}
    if decision.action == A.WAIT:
        recent = ScaleDecision.objects.filter(
            action=A.WAIT, reason=decision.reason, at__gte=timezone.now() - WAIT_REPEAT_AFTER
        )
        if any(row.sessions == list(decision.sessions) for row in recent.only("sessions")):
            return False  # the same wait for the same sessions is on record already
        scale_decision_record(A.WAIT, **common)
        return True
    if decision.action == A.LAUNCH:
        template = templates[decision.template_id]
        with transaction.atomic():
            worker = worker_create(
                name=f"{template.name}-{uuid.uuid4().hex[:8]}",
                actor=AUTOSCALER_ACTOR,
                template=template,
                reason=decision.reason,
            )
            scale_decision_record(A.LAUNCH, template=template, worker=worker, **common)
        return True
    worker = CMLWorker.objects.filter(pk=decision.worker_id).first()
    if worker is None:
        return False
    if decision.action == A.START:
        if worker.status not in (W.STOPPING, W.STOPPED) or worker.desired_status != DesiredStatus.STOPPED:
            return False
        with transaction.atomic():
            worker_set_desired(worker, DesiredStatus.RUNNING, actor=AUTOSCALER_ACTOR, reason=decision.reason)
            scale_decision_record(A.START, worker=worker, **common)
        return True
    if decision.action == A.CANCEL_DRAIN:
        with transaction.atomic():
            worker_cancel_drain(worker, actor=AUTOSCALER_ACTOR, reason=decision.reason)
            scale_decision_record(A.CANCEL_DRAIN, worker=worker, **common)
        return True
    if decision.action in (A.DRAIN, A.PAUSE):
        if decision.action == A.DRAIN:
            service, actor = worker_drain_if_idle, AUTOSCALER_ACTOR
        else:
            service, actor = worker_pause_if_idle, IDLE_ACTOR
        with transaction.atomic():
            if service(worker, actor=actor, reason=decision.reason) is None:
                return False
            scale_decision_record(decision.action, worker=worker, actor=actor, **common)
        return True
    raise ValueError(f"unknown decision {decision.action}")


# --- the discovery loop --------------------------------------------------------------------

# Instances in these states are machines LCM could use; others are gone or going.
_LIVE_STATES = ("pending", "running", "stopping", "stopped")
# Worker statuses in which a worker's instance must exist.
_HAS_INSTANCE = {W.PROVISIONING, W.STARTING, W.RUNNING, W.DRAINING, W.STOPPING, W.STOPPED}


def discovery_tick(*, force: bool = False, require_leader: bool = True) -> dict:
    """Import EC2 instances the database does not know (LCM tags or the CML AMI pattern) and reconcile at once
    the workers whose instance vanished. Runs every `discovery_interval_minutes` unless `force`.

    Returns `{"imported": [worker names], "vanished": [worker names]}`.
    """
    from workers.clients.ec2 import InstanceState, ec2_client
    from workers.models import SystemSettings

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
    pattern = policy.discovery_ami_pattern
    images = {image.id for image in ec2.find_images(pattern)} if pattern else set()
    instances = ec2.describe_instances()  # every instance of the account in the region, terminated ones included
    by_id = {instance.id: instance for instance in instances}
    with_instance = CMLWorker.objects.exclude(aws_instance_id__isnull=True).exclude(aws_instance_id="")
    known = {worker.aws_instance_id: worker for worker in with_instance}
    launching = CMLWorker.objects.filter(status=W.PENDING, aws_instance_id__isnull=True).values_list("pk", flat=True)
    waiting_for_adoption = {str(pk) for pk in launching}
    for instance in instances:
        if instance.id in known or instance.state.value not in _LIVE_STATES:
            continue
        ours = instance.managed_by == ec2.managed_by
        if not ours and instance.image_id not in images:
            continue
        if instance.worker_id in waiting_for_adoption:
            continue  # launched by a worker whose reconciler has not recorded it yet: it adopts it by tag
        worker = _import_instance(ec2, instance, ours)
        report["imported"].append(worker.name)
    for instance_id, worker in known.items():
        if worker.status not in _HAS_INSTANCE:
            continue
        instance = by_id.get(instance_id)
        if instance is None or instance.state in (InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED):
            report["vanished"].append(worker.name)
            _reconcile_now(worker)
    _discovery_ran(now)
    return report


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
    from workers.clients.ec2 import TAG_MANAGED_BY, TAG_WORKER_ID, InstanceState
    from workers.models import SystemSettings

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
    from lcm import reconcile
    from workers.reconcilers import LOOP, reconcile_worker, record_failure

    reconcile.run(LOOP, str(worker.pk), reconcile_worker, record_failure)
