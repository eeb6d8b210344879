"""The evidence checks of a `LifecycleRig` run (SPEC §9): used by the crash tests (tests/processes), apart from the
rig so that the `bench_lifecycle` command (in the sessions app, which never imports grading) does not import them."""

from datetime import datetime

from grading.models import EvidenceCollection, EvidenceItem
from grading.storage import evidence_store
from sessions.models import LabletSession


def evidence_problems(rig, session_ids) -> list[str]:
    """What breaks SPEC §9's crash safety among finished sessions (empty when nothing does): a session that ran
    without RECORDED evidence or without its lab YAML, a lab wiped or deleted before its session's evidence was
    recorded (the CML simulator's recorded wipe/delete calls against the collection's finish), an object in the
    store that no row names, a row whose object is missing."""
    sessions = list(LabletSession.objects.filter(pk__in=list(session_ids), started_at__isnull=False))
    collections = {c.lablet_session_id: c for c in EvidenceCollection.objects.filter(lablet_session__in=sessions)}
    kinds: dict = {}
    for session_id, kind in EvidenceItem.objects.filter(lablet_session__in=sessions).values_list(
        "lablet_session_id", "kind"
    ):
        kinds.setdefault(session_id, set()).add(kind)
    wipes = _cml_wipes(rig)
    problems = []
    for session in sessions:
        collection = collections.get(session.pk)
        if collection is None or collection.status != "RECORDED":
            state = collection.status if collection else "none"
            problems.append(f"session {session.pk} ran but its evidence is {state}")
            continue
        if "lab_yaml" not in kinds.get(session.pk, set()):
            problems.append(f"session {session.pk} has no lab_yaml evidence")
        lab_id = session.cml_lab_id
        first_wipe = min((at for lab, at in wipes if lab == lab_id and at > session.started_at), default=None)
        if first_wipe is not None and collection.finished_at > first_wipe:
            problems.append(f"lab {lab_id} was wiped at {first_wipe} before session {session.pk}'s evidence")
    problems += _store_mismatches()
    return problems


def _cml_wipes(rig) -> list[tuple[str, datetime]]:
    """(lab id, when) of every wipe and delete the CML simulator served."""
    response = rig.http.get(f"{rig.urls['cml']}/_sim/requests", timeout=60)
    response.raise_for_status()
    found = []
    for entry in response.json():
        path, method = entry.get("path", ""), entry.get("method")
        if entry.get("status") not in (200, 204) or "/labs/" not in path:
            continue
        tail = path.split("/labs/", 1)[1].split("/")
        if (method == "PUT" and tail[1:] == ["wipe"]) or (method == "DELETE" and len(tail) == 1):
            found.append((tail[0], datetime.fromisoformat(entry["at"])))
    return found


def _store_mismatches() -> list[str]:
    keys = set(evidence_store().keys("sessions/"))
    rows = set(EvidenceItem.objects.filter(expired_at__isnull=True).values_list("object_key", flat=True))
    return [f"object {key} has no row" for key in sorted(keys - rows)] + [
        f"row {key} has no object" for key in sorted(rows - keys)
    ]
