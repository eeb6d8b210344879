"""Evidence (SPEC §9): what a candidate did, kept in object storage before their lab is wiped or deleted.

The teardown gate (`evidence_gate`, registered with `sessions.reconcilers.register_wipe_gate` by
`GradingConfig.ready()`) runs before the lablet reconciler stops, wipes or deletes the lab of a session that
ran (RUNNING was reached). It collects, each part resumable:
- the lab: every node's configuration extracted (CML `extract_configuration`), then the lab YAML downloaded
  (`lab_yaml`, configurations included) and one `node_config` item per node, from that YAML;
- the LDS session record (`lds_record`) and the candidate's collected responses (`lds_responses`);
- the grading request and result (`grading`: the Grading Engine session, with its pod and score report, and
  the score reports stored for it).
Until every item is recorded the gate answers what it waits for, so the lab is not wiped; after
`SystemSettings.evidence_timeout_minutes` since teardown began the teardown goes on and the session's history
says "evidence missing: <reason>". A part that cannot exist any more (the lab gone from CML) is missing at once.

Crash safety: an object is written first, under a key that depends only on the session and the item
(`sessions/<id>/<kind>/<name>`), then its row (`EvidenceItem`, keyed by the object key): a crash between the two
leaves an object without a row, which the next pass overwrites and records, or the sweep deletes once the
collection is finished (`sweep_orphans`, run when it finishes and again by the `evidence` loop). A row never
exists without its object, except after the retention loop deleted it (then `expired_at` is set; a crash between
the delete and the mark is finished by the next tick). Object contents are never logged.
"""

import hashlib
import json
import logging
import re
from datetime import timedelta

import yaml
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from grading.clients.grading_engine import grading_client
from grading.models import EvidenceCollection, EvidenceItem
from grading.states import EVIDENCE_TRANSITIONS, EvidenceStatus
from grading.storage import evidence_store
from lcm import http
from lcm.fsm import apply_transition
from lcm.reconcile import backoff
from sessions.clients.lds import lds_client
from sessions.services import lock_session, record_session_note
from workers.clients.cml import cml_client_for
from workers.models import SystemSettings
from workers.states import LabStatus

logger = logging.getLogger("lcm.grading.evidence")

ACTOR = "evidence"
E = EvidenceStatus
K = EvidenceItem.Kind
# Labs still in CML with the candidate's nodes on them.
_LAB_IN_CML = {LabStatus.DEFINED, LabStatus.STARTING, LabStatus.BOOTED, LabStatus.STOPPING, LabStatus.STOPPED}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def object_key(session_id, kind: str, name: str) -> str:
    """The deterministic key of one item: the same item always lands on the same object."""
    return f"sessions/{session_id}/{kind}/{_SAFE.sub('_', name)[:200] or 'item'}"


# --- the teardown gate ---------------------------------------------------------------------------


def needs_evidence(session) -> bool:
    """A session whose lab ran for its candidate (RUNNING was reached) and is still in CML, or whose collection
    has begun."""
    if not settings.LCM_EVIDENCE_ENABLED or session.started_at is None:
        return False
    if EvidenceCollection.objects.filter(lablet_session=session).exists():
        return True
    lab = session.lab_record
    return bool(lab and lab.active_session_id == session.pk and lab.cml_lab_id and lab.status in _LAB_IN_CML)


def evidence_gate(session) -> str | None:
    """The lablet reconciler's step before a lab is stopped, wiped or deleted: None when the lab may go (the
    evidence is recorded, was given up, or is not needed), else what it waits for."""
    if not needs_evidence(session):
        return None
    collection, _ = EvidenceCollection.objects.get_or_create(lablet_session=session)
    if collection.status != E.COLLECTING:
        return None
    now = timezone.now()
    timeout = timedelta(minutes=SystemSettings.load().evidence_timeout_minutes)
    timed_out = now - collection.started_at >= timeout
    if collection.next_attempt_at and collection.next_attempt_at > now and not timed_out:
        return f"waiting for evidence: {collection.last_error}"
    try:
        gaps = collect(session)
    except Exception as exc:  # an external system or the store failing: wait, up to the timeout
        reason = _reason(exc)
        if now - collection.started_at >= timeout:
            finish(collection, E.MISSING, reason)
            return None
        attempts = collection.attempts + 1
        EvidenceCollection.objects.filter(pk=collection.pk).update(
            attempts=attempts, last_error=reason[:2000], next_attempt_at=now + backoff(attempts, cap=60)
        )
        logger.info("evidence of session %s not collected yet (attempt %s): %s", session.pk, attempts, reason)
        return f"collecting evidence: {reason}"
    finish(collection, E.MISSING if gaps else E.RECORDED, "; ".join(gaps))
    return None


def _reason(exc: Exception) -> str:
    """Why a collection failed, without any content (an error names the system and the operation)."""
    if isinstance(exc, http.ExternalError):
        return f"{exc.system} {exc.operation}: {str(exc.detail)[:200]}"
    return exc.__class__.__name__


def finish(collection, status: str, reason: str) -> None:
    """End a collection (RECORDED or MISSING) with a note on the session's history, then sweep its orphans."""
    with transaction.atomic():
        locked = EvidenceCollection.objects.select_for_update().get(pk=collection.pk)
        if locked.status != E.COLLECTING:
            return
        apply_transition(locked, EVIDENCE_TRANSITIONS, status, entity="evidence")
        locked.finished_at = timezone.now()
        locked.reason = reason[:2000]
        locked.save()
        count = EvidenceItem.objects.filter(lablet_session_id=locked.lablet_session_id).count()
        note = f"evidence recorded: {count} items" if status == E.RECORDED else f"evidence missing: {reason}"
        record_session_note(lock_session(locked.lablet_session_id), actor=ACTOR, reason=note[:2000])
    sweep_orphans(locked)


# --- collecting ------------------------------------------------------------------------------------


def collect(session) -> list[str]:
    """Record every item not recorded yet; returns the parts that can no longer be collected (raises when a part
    may still come: the caller waits and retries)."""
    recorded = set(EvidenceItem.objects.filter(lablet_session=session).values_list("kind", flat=True))
    gaps: list[str] = []
    if K.LAB_YAML not in recorded:
        gaps += _collect_lab(session)
    user_session = session.user_sessions.exclude(lds_session_id="").order_by("-created_at").first()
    if user_session is not None and not {K.LDS_RECORD, K.LDS_RESPONSES} <= recorded:
        gaps += _collect_lds(session, user_session.lds_session_id)
    if K.GRADING not in recorded:
        _collect_grading(session)
    return gaps


def _collect_lab(session) -> list[str]:
    lab = session.lab_record
    if lab is None or not lab.cml_lab_id or lab.status not in _LAB_IN_CML:
        return ["lab_yaml: the lab is no longer in CML"]
    cml = cml_client_for(session.worker)
    try:
        cml_nodes = cml.nodes(lab.cml_lab_id)
        for node in cml_nodes:
            try:
                cml.extract_node_configuration(lab.cml_lab_id, node["id"])
            except http.BadRequest:
                continue  # a node not running: its stored configuration is what there is
        text = cml.download_lab(lab.cml_lab_id)
    except http.NotFound:
        return ["lab_yaml: the lab vanished from CML"]
    try:
        nodes = (yaml.safe_load(text) or {}).get("nodes") or []
    except yaml.YAMLError:
        nodes = []
    for index, node in enumerate(nodes if isinstance(nodes, list) else []):
        label = str(node.get("label") or node.get("id") or index) if isinstance(node, dict) else str(index)
        config = node.get("configuration") if isinstance(node, dict) else None
        record(session, K.NODE_CONFIG, label, _text(config), "text/plain")
    # Last: a recorded lab YAML says the lab's part is complete (a crash before it redoes the whole part, and
    # extracting again from the running nodes gives the same). Before it, a lab kept for reuse gets its
    # definition's configurations back: the next candidate must not boot from this one's.
    key = object_key(session.pk, K.LAB_YAML, "lab.yaml")
    evidence_store().put(key, text.encode(), "application/yaml")
    if session.definition.lab_reuse_enabled:
        _restore_configurations(cml, lab.cml_lab_id, cml_nodes, session.definition.lab_yaml)
    record(session, K.LAB_YAML, "lab.yaml", text.encode(), "application/yaml", stored=True)
    return []


def _restore_configurations(cml, lab_id: str, cml_nodes: list[dict], definition_yaml: str) -> None:
    """Set each node's stored configuration back to its definition's (by node label)."""
    original = {
        str(node.get("label")): node.get("configuration")
        for node in (yaml.safe_load(definition_yaml) or {}).get("nodes") or []
        if isinstance(node, dict)
    }
    for node in cml_nodes:
        cml.set_node_configuration(lab_id, node["id"], original.get(str(node.get("label"))))


def _text(config) -> bytes:
    if isinstance(config, list):  # CML 2.9 may hold several configuration files per node
        config = "\n".join(str(item.get("content", "")) if isinstance(item, dict) else str(item) for item in config)
    return ("" if config is None else str(config)).encode()


def _collect_lds(session, lds_session_id: str) -> list[str]:
    client = lds_client()
    try:
        record(session, K.LDS_RECORD, lds_session_id, _json(client.get_session(lds_session_id)), "application/json")
        responses = client.collect_responses(lds_session_id)
        record(session, K.LDS_RESPONSES, lds_session_id, _json(responses), "application/json")
    except http.NotFound:
        return ["lds: the LDS session is gone"]
    return []


def _collect_grading(session) -> None:
    """The grading request (the engine session's pod) and result (its score report, and ours)."""
    gradings = [g for g in session.grading_sessions.order_by("created_at") if g.grading_session_id]
    if not gradings:
        return
    engine = grading_client()
    exchanges = []
    for grading in gradings:
        try:
            engine_session = engine.get_session(grading.grading_session_id)
        except http.NotFound:
            engine_session = None
        reports = [
            {"score": str(r.score), "max_score": str(r.max_score), "cut_score": str(r.cut_score), "passed": r.passed}
            for r in grading.score_reports.all()
        ]
        exchanges.append(
            {
                "grading_session": str(grading.pk),
                "part_id": grading.grading_part_id,
                "status": grading.status,
                "engine_session": engine_session,
                "score_reports": reports,
            }
        )
    record(session, K.GRADING, "grading.json", _json({"gradings": exchanges}), "application/json")


def _json(value) -> bytes:
    return json.dumps(value, sort_keys=True, indent=1, default=str).encode()


def record(session, kind: str, name: str, data: bytes, content_type: str, *, stored=False) -> EvidenceItem:
    """Write one object (unless `stored` already), then its row (object first: see the module docstring)."""
    key = object_key(session.pk, kind, name)
    if not stored:
        evidence_store().put(key, data, content_type)
    item, _ = EvidenceItem.objects.update_or_create(
        object_key=key,
        defaults={
            "lablet_session_id": session.pk,
            "kind": kind,
            "name": name[:300],
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "content_type": content_type,
        },
    )
    return item


# --- retention and sweeping (the `evidence` loop) ---------------------------------------------------


def sweep_orphans(collection) -> bool:
    """Delete objects under the session's prefix that no row names (written by a pass that died before its row);
    True when swept (the store answered)."""
    if collection.status == E.COLLECTING:
        return False
    store = evidence_store()
    try:
        known = set(EvidenceItem.objects.filter(lablet_session_id=collection.lablet_session_id).values_list(
            "object_key", flat=True
        ))  # fmt: skip
        for key in store.keys(f"sessions/{collection.lablet_session_id}/"):
            if key not in known:
                store.delete(key)
    except http.ExternalError as exc:
        logger.info("evidence of %s not swept yet: %s", collection.lablet_session_id, _reason(exc))
        return False
    EvidenceCollection.objects.filter(pk=collection.pk).update(swept_at=timezone.now())
    return True


RETENTION_BATCH = 200


def evidence_tick() -> None:
    """The `evidence` loop: objects older than `evidence_retention_days` are deleted and their rows marked expired;
    finished collections not swept yet are swept. Idempotent: a crash anywhere is finished by the next tick."""
    if not settings.LCM_EVIDENCE_ENABLED:
        return
    cutoff = timezone.now() - timedelta(days=SystemSettings.load().evidence_retention_days)
    expired = list(EvidenceItem.objects.filter(created_at__lt=cutoff, expired_at__isnull=True)[:RETENTION_BATCH])
    store = evidence_store() if expired else None
    for item in expired:
        store.delete(item.object_key)
        EvidenceItem.objects.filter(pk=item.pk).update(expired_at=timezone.now())
    if expired:
        logger.info("evidence retention: %s objects deleted", len(expired))
    pending = EvidenceCollection.objects.filter(swept_at__isnull=True).exclude(status=E.COLLECTING)
    for collection in pending[:RETENTION_BATCH]:
        sweep_orphans(collection)
