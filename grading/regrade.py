"""The re-grade reconciler (SPEC §9): one function of one `Regrade` id, level-triggered (the `regrades` loop).

Desired state: the ARCHIVED session has a new ScoreReport graded from its evidence lab (kept beside the earlier
ones; the newest is current), and nothing of the re-grade is left: no lab in CML, no lab record holding ports.
Steps by status, each resumable after a crash at any line:
- REQUESTED: a RUNNING worker the session's definition fits (the one fit rule, with the worker's row locked as
  placement locks it); a lab record titled `labs.lab_title(id)` with ports freshly allocated for the evidence
  YAML's port tags, recorded with → BOOTING. From then until DONE/FAILED the re-grade holds capacity on that
  worker like a session of its definition (`capacity_holds`). No worker with room within
  `LCM_REGRADE_WAIT_MINUTES` → TEARING_DOWN with the reason, then FAILED;
- BOOTING: the lab reconciler imports the evidence YAML (configurations included, ports rewritten), starts it and
  waits for its nodes (`workers.labs.boot`, which finds a lost import again by its title); a GradingSession for
  the session is made with → GRADING;
- GRADING: a Grading Engine session (our GradingSession's id, so a retried create is refused rather than
  doubled) with the pod of the new lab's devices, graded and polled; the score report stored (once: a pass that
  died after storing it finds it) with → TEARING_DOWN;
- TEARING_DOWN: the lab stopped, wiped and deleted (`workers.labs.tear_down`, DELETED releases the ports) → DONE,
  or FAILED when a step gave up (`error`).
A failing pass backs off on the row; after `LCM_MAX_RECONCILE_ATTEMPTS` the re-grade gives up: it tears down and
ends FAILED. Progress and outcome are notes on the session's history; the session stays ARCHIVED.
"""

import logging
import uuid
from datetime import timedelta
from urllib.parse import urlparse

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from grading.clients.grading_engine import find_part, grading_client, part_score, pod_from_devices
from grading.models import EvidenceItem, Regrade, ScoreReport
from grading.reconcilers import ENGINE_FAULTED, pass_mark
from grading.services import (
    grading_session_create,
    grading_session_update,
    regrade_move,
    regrade_record_failure,
    score_report_create,
)
from grading.states import REGRADE_FINISHED, GradingStatus, RegradeStatus
from grading.storage import evidence_store
from lcm import http
from lcm.reconcile import Result, backoff
from scheduling.capacity import Demand, rejection_reason
from scheduling.selectors import worker_capacities
from sessions.labyaml import analyze_lab_yaml, rewritten_topology
from workers import labs
from workers.clients.cml import cml_client_for
from workers.models import CMLWorker
from workers.port_services import ports_allocate
from workers.services import lab_record_create
from workers.states import PORT_PROTOCOLS, LabStatus, WorkerStatus

logger = logging.getLogger("lcm.grading.regrade")

ACTOR = "regrader"
R = RegradeStatus
G = GradingStatus
POLL_SECONDS = 1.0
WAIT_FOR_WORKER_SECONDS = 5.0


def regrades_needing_work(now=None) -> list:
    """Ids of re-grades under way whose backoff (if any) is over, in one query."""
    now = now or timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    return list(Regrade.objects.exclude(status__in=REGRADE_FINISHED).filter(due).values_list("pk", flat=True))


def reconcile_regrade(regrade_id) -> Result:
    """One pass for one re-grade: the next step its status calls for."""
    regrade = (
        Regrade.objects.select_related("lablet_session__definition", "worker", "lab_record", "grading_session")
        .filter(pk=regrade_id)
        .first()
    )
    if regrade is None or regrade.status in REGRADE_FINISHED:
        return Result.done("nothing to do")
    now = timezone.now()
    if regrade.next_attempt_at and regrade.next_attempt_at > now:
        return Result.requeue((regrade.next_attempt_at - now).total_seconds(), "backing off")
    return _HANDLERS[regrade.status](regrade)


def record_failure(regrade_id, exc) -> float | None:
    """`on_error` hook: back off on the row; past the attempt limit, give up (tear down, then FAILED)."""
    regrade = Regrade.objects.filter(pk=regrade_id).first()
    if regrade is None or regrade.status in REGRADE_FINISHED:
        return None
    error = f"{exc.__class__.__name__}: {exc}"[:2000]
    if regrade.attempts + 1 >= settings.LCM_MAX_RECONCILE_ATTEMPTS and regrade.status != R.TEARING_DOWN:
        regrade_move(regrade, R.TEARING_DOWN, actor=ACTOR, reason=f"gave up: {error}", error=error)
        return 0.0
    delay = backoff(regrade.attempts + 1)
    regrade_record_failure(regrade, error, retry_at=timezone.now() + delay)
    return delay.total_seconds()


def _evidence_yaml(session) -> str:
    item = EvidenceItem.objects.filter(lablet_session=session, kind="lab_yaml", expired_at__isnull=True).first()
    if item is None:
        raise http.NotFound("s3", "GetObject", "the session has no lab_yaml evidence any more")
    return evidence_store().get(item.object_key).decode()


def capacity_holds(worker_ids=None) -> list:
    """`(worker id, Demand)` of every re-grade holding a lab on a worker (registered with
    `scheduling.selectors.register_capacity_holder`, so placement, the pages and the next re-grade count it as
    a session of its definition until it is DONE or FAILED). One query."""
    rows = Regrade.objects.exclude(status__in=REGRADE_FINISHED).filter(worker__isnull=False)
    if worker_ids is not None:
        rows = rows.filter(worker_id__in=list(worker_ids))
    rows = rows.select_related("lablet_session__definition")
    return [(row.worker_id, Demand.of(row.lablet_session.definition)) for row in rows]


def _choose_worker(definition, preferred_id) -> CMLWorker | None:
    """A RUNNING worker the definition fits now (its own first), by the one fit rule; the worker's row is locked
    (the caller's transaction), as placement's batch locks it, so the two cannot both take its last room."""
    running = list(CMLWorker.objects.filter(status=WorkerStatus.RUNNING).values_list("pk", flat=True))
    capacities = worker_capacities(running)
    demand = Demand.of(definition)
    fits = [pk for pk, capacity in capacities.items() if rejection_reason(capacity, demand) is None]
    for pk in sorted(fits, key=lambda pk: (pk != str(preferred_id), capacities[pk].name)):
        worker = CMLWorker.objects.select_for_update().filter(pk=pk, status=WorkerStatus.RUNNING).first()
        if worker is not None and rejection_reason(worker_capacities([pk])[pk], demand) is None:
            return worker
    return None


def _waited_too_long(regrade) -> bool:
    return timezone.now() - regrade.created_at > timedelta(minutes=settings.LCM_REGRADE_WAIT_MINUTES)


def _on_requested(regrade) -> Result:
    session = regrade.lablet_session
    text = _evidence_yaml(session)
    analysis = analyze_lab_yaml(text)
    with transaction.atomic():
        worker = _choose_worker(session.definition, session.worker_id)
        if worker is None and _waited_too_long(regrade):
            error = f"no RUNNING worker had room for it within {settings.LCM_REGRADE_WAIT_MINUTES:g} minutes"
            regrade_move(regrade, R.TEARING_DOWN, actor=ACTOR, reason=f"gave up: {error}", error=error)
            return Result.requeue(0, "gave up waiting")
        if worker is None:
            return Result.requeue(WAIT_FOR_WORKER_SECONDS, "waiting for a worker with capacity")
        pk = uuid.uuid4()
        lab = lab_record_create(
            pk=pk, title=labs.lab_title(pk), worker=worker, actor=ACTOR, node_count=analysis.node_count
        )
        ports_allocate(lab, [entry["name"] for entry in analysis.port_template], new_lab=True)
        regrade_move(
            regrade, R.BOOTING, actor=ACTOR, reason=f"importing the evidence lab on {worker.name}",
            worker=worker, lab_record=lab,
        )  # fmt: skip
    return Result.requeue(0, "booting")


def _on_booting(regrade) -> Result:
    session, worker = regrade.lablet_session, regrade.worker
    text = _evidence_yaml(session)
    lab = regrade.lab_record
    lab = labs.boot(
        lab, cml_client_for(worker), worker, topology=lambda: rewritten_topology(text, lab.ports), actor=ACTOR
    )
    if lab.status != LabStatus.BOOTED:
        return Result.requeue(POLL_SECONDS, "waiting for the nodes to boot")
    with transaction.atomic():
        grading = grading_session_create(session, actor=ACTOR, reason=f"re-grade {regrade.pk}")
        regrade_move(regrade, R.GRADING, actor=ACTOR, reason="evidence lab booted; grading", grading_session=grading)
    return Result.requeue(0, "grading")


def _devices(regrade, text: str) -> list[dict]:
    """One device per node of the evidence lab: its best protocol's port on the re-grade's worker."""
    worker = regrade.worker
    host = worker.public_ip or worker.private_ip or urlparse(worker.cml_base_url).hostname or ""
    ports = regrade.lab_record.ports
    by_node: dict[str, list[dict]] = {}
    for entry in analyze_lab_yaml(text).port_template:
        by_node.setdefault(entry["node_label"], []).append(entry)
    devices = []
    for label, entries in by_node.items():
        best = min(entries, key=lambda e: PORT_PROTOCOLS.index(e["protocol"]))
        devices.append({"label": label, "protocol": best["protocol"], "host": host, "port": ports.get(best["name"])})
    return devices


def _on_grading(regrade) -> Result:
    session, grading = regrade.lablet_session, regrade.grading_session
    existing = ScoreReport.objects.filter(grading_session=grading).first() if grading else None
    if existing is not None:  # stored by a pass that died before moving on
        return _graded(regrade, existing)
    engine = grading_client()
    part_id = session.definition.form_qualified_name or session.definition.name
    external_id = str(grading.pk)
    if not grading.grading_session_id:
        pod = pod_from_devices(f"pod-regrade-{regrade.pk}", _devices(regrade, _evidence_yaml(session)), collector="lcm")
        try:
            engine.create_session(
                session.owner.ljust(3, "_"), session_id=external_id, lds_session_id=f"lcm-regrade-{regrade.pk}",
                lds_environment="lcm", part_id=part_id, pod=pod,
            )  # fmt: skip
        except (http.Conflict, http.BadRequest):
            engine.get_session(external_id)  # made by a pass whose answer was lost; else the refusal was real
        grading = grading_session_update(
            grading, actor=ACTOR, status=G.COLLECTING, grading_session_id=external_id, grading_part_id=part_id,
            pod_id=pod["id"], reason="Grading Engine session created (re-grade)",
        )  # fmt: skip
    if grading.status in (G.PENDING, G.COLLECTING):
        engine.grade(external_id, part_id)
        grading_session_update(grading, actor=ACTOR, status=G.GRADING, reason="re-grade requested")
        return Result.requeue(POLL_SECONDS, "grading requested")
    part = find_part(engine.get_session(external_id), part_id)
    if str(part.get("status") or "").lower() in ENGINE_FAULTED:
        reason = str(part.get("statusReason") or "the Grading Engine faulted")[:2000]
        grading_session_update(grading, actor=ACTOR, status=G.FAULTED, error_message=reason, reason=reason)
        regrade_move(regrade, R.TEARING_DOWN, actor=ACTOR, reason=f"grading faulted: {reason}", error=reason)
        return Result.requeue(0, "grading faulted")
    score = part_score(part)
    if score is None:
        return Result.requeue(POLL_SECONDS, "grading")
    maximum = max(score.max_score, 1)
    report = score_report_create(
        session, actor=ACTOR, score=score.score, max_score=maximum, grading_session=grading, regrade=True,
        cut_score=pass_mark(session, engine, part_id, maximum),
        sections=[{"name": s.id, "score": s.score, "max_score": max(s.max_score, 0)} for s in score.sections],
    )  # fmt: skip
    grading_session_update(grading, actor=ACTOR, status=G.REVIEWING, reason="re-grade score report received")
    return _graded(regrade, report)


def _graded(regrade, report) -> Result:
    reason = f"score {report.score}/{report.max_score} stored ({'PASS' if report.passed else 'FAIL'}); tearing down"
    regrade_move(regrade, R.TEARING_DOWN, actor=ACTOR, reason=reason, score_report=report)
    return Result.requeue(0, "graded")


def _on_tearing_down(regrade) -> Result:
    lab, worker = regrade.lab_record, regrade.worker
    if lab is not None and lab.status != LabStatus.DELETED:
        waiting = labs.tear_down(lab, lambda: cml_client_for(worker), worker, delete=True, actor=ACTOR)
        if waiting is not None:
            return Result.requeue(POLL_SECONDS, waiting)
    if regrade.error:
        regrade_move(regrade, R.FAILED, actor=ACTOR, reason=f"lab deleted; re-grade failed: {regrade.error}")
        return Result.done("failed")
    regrade_move(regrade, R.DONE, actor=ACTOR, reason="lab deleted; re-grade done")
    return Result.done("done")


_HANDLERS = {
    R.REQUESTED: _on_requested,
    R.BOOTING: _on_booting,
    R.GRADING: _on_grading,
    R.TEARING_DOWN: _on_tearing_down,
}
