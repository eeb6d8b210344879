"""The lab reconciler (SPEC §3.3, §3.5): the one owner of `LabRecord` against CML.

A caller says what it wants of a lab, and these steps make CML and the record match, each resumable
after a crash at any line:
- booted (`boot`): imported with the session's allocated ports (titled `lab_title(record id)` first, so
  an import whose answer was lost is found again by its title), started, every node converged;
- wiped for reuse or deleted (`tear_down`): stopped, then wiped and kept bound to nobody, or deleted
  (DELETED releases the ports);
- known (`sync_labs`, the worker reconciler's discovery): a lab in CML that no record knows is
  recorded ORPHANED with its ports reserved; a recorded lab gone from CML is DELETED.
It also chooses a lab for a session entering INSTANTIATING (`prepare`, `claim_reusable`, `new_lab`):
a wiped lab of the definition on the worker, else a new record with freshly allocated ports.

The lablet reconciler calls `prepare`/`boot`/`tear_down` for its session's lab and writes the session
itself; this module writes labs, their ports and their history, never a session.
"""

import logging
import uuid
from collections.abc import Callable

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from lcm import http
from sessions.labyaml import PortTagError, parse_port_tag
from workers.models import LabRecord
from workers.port_services import ports_allocate
from workers.services import lab_record_create, lab_record_reserve_ports, lab_record_transition
from workers.states import LAB_TRANSITIONS, LabStatus

logger = logging.getLogger("lcm.workers.labs")

L = LabStatus
# CML lab states (EXTERNAL-SYSTEMS.md §1.3); there is no lab-level BOOTED.
CML_STARTED, CML_STOPPED, CML_DEFINED = "STARTED", "STOPPED", "DEFINED_ON_CORE"
TITLE_PREFIX = "lcm-"


def lab_title(record_id) -> str:
    """The title an import of LCM carries: `lcm-<lab record id>`, so a lost import is found by it."""
    return f"{TITLE_PREFIX}{record_id}"


def record_id_of(title: str) -> uuid.UUID | None:
    """The lab record id an LCM import title names, or None for any other title."""
    if not title.startswith(TITLE_PREFIX):
        return None
    try:
        return uuid.UUID(title[len(TITLE_PREFIX) :])
    except ValueError:
        return None


def walk(lab, path, *, actor, reason: str, **fields) -> LabRecord:
    """Move the record along `path`, skipping steps it has passed or that its table does not need (a re-run
    after a crash finds the record wherever the last pass left it)."""
    for target in path:
        if lab.status == target or target not in LAB_TRANSITIONS.get(lab.status, set()):
            continue
        lab = lab_record_transition(lab, target, actor=actor, reason=reason, **fields)
    return lab


def _walk_fresh(lab, path, *, actor, reason: str, **fields) -> LabRecord:
    """`walk` from the record as it is now (another pass may have moved it since `lab` was read)."""
    return walk(LabRecord.objects.get(pk=lab.pk), path, actor=actor, reason=reason, **fields)


def release(lab) -> None:
    """The lab no longer serves a session (a wiped lab stays WIPED for reuse)."""
    LabRecord.objects.filter(pk=lab.pk).update(active_session=None)


# --- choosing a session's lab ------------------------------------------------------------------


def prepare(holder, definition, worker, *, actor) -> tuple[LabRecord, dict]:
    """The lab a session entering INSTANTIATING will run on, and its ports, inside that transition (the
    session row locked): a wiped lab of its definition on its worker (still to be checked in CML, see
    `still_reusable`), else a new record, titled for the import and holding freshly allocated ports."""
    lab = bind_wiped_lab(holder, definition, worker) if definition.lab_reuse_enabled else None
    if lab is not None:
        return lab, lab.ports
    return new_lab(holder, definition, worker, actor=actor)


def bind_wiped_lab(holder, definition, worker) -> LabRecord | None:
    """The oldest wiped lab of `definition` on `worker` that nobody else holds (one locked by another pass is
    skipped), bound to `holder` (a session); call inside a transaction.

    A lab bound to the holder already counts: a pass that crashed between binding it and attaching it to the
    session left it so. Any other lab still bound to the holder lets go of it (a session holds one lab).
    """
    lab = (
        LabRecord.objects.select_for_update(skip_locked=True)
        .filter(worker=worker, definition=definition, status=L.WIPED)
        .filter(Q(active_session=None) | Q(active_session=holder))
        .order_by("created_at")
        .first()
    )
    if lab is not None:
        LabRecord.objects.filter(active_session=holder).exclude(pk=lab.pk).update(active_session=None)
        lab.active_session = holder
        lab.save(update_fields=["active_session", "updated_at"])
    return lab


def new_lab(holder, definition, worker, *, actor) -> tuple[LabRecord, dict]:
    """A new lab record bound to `holder`, titled for its import, with its ports (in the caller's transaction)."""
    # A binding a crashed pass left on a lab this holder will not use would block the new one.
    LabRecord.objects.filter(active_session=holder).update(active_session=None)
    pk = uuid.uuid4()
    lab = lab_record_create(
        pk=pk,
        title=lab_title(pk),
        active_session=holder,
        worker=worker,
        actor=actor,
        definition=definition,
        node_count=definition.node_count,
    )
    return lab, ports_allocate(lab, definition.port_names, new_lab=True)


def claim_reusable(holder, definition, worker, cml, *, actor) -> LabRecord | None:
    """A wiped lab of this definition on this worker (`bind_wiped_lab`) still present in CML, bound to `holder`."""
    if not definition.lab_reuse_enabled:
        return None
    while True:
        with transaction.atomic():
            lab = bind_wiped_lab(holder, definition, worker)
        if lab is None:
            return None
        if still_reusable(lab, cml, actor=actor):
            return lab
        # Not reusable: left to lab discovery; try the next one, or import a fresh one.


def still_reusable(lab, cml, *, actor, started_by_holder: bool = False) -> bool:
    """Whether a wiped lab is still in CML in a reusable shape; if not it is marked (ORPHANED when gone, ERROR
    when in another state, for lab discovery) and bound to nobody.

    `started_by_holder`: the lab is already bound to the session asking, so a lab found started is that
    session's own start whose answer was lost (a pass that died between `start_lab` and recording it):
    still its lab, and starting it again is harmless.
    """
    try:
        state = cml.lab_state(lab.cml_lab_id)
    except http.NotFound:
        _walk_fresh(lab, [L.ORPHANED, L.DELETED], actor=actor, reason="vanished from CML", cml_state="")
        return False
    if state in (CML_DEFINED, CML_STOPPED) or started_by_holder:
        return True
    lab_record_transition(lab, L.ERROR, actor=actor, reason=f"wiped lab found {state}", cml_state=state)
    release(lab)
    return False


def find_by_title(cml, title: str, worker) -> str | None:
    """The id of a lab with this title already in CML (an import whose answer was lost).

    Only labs no record knows are read: a lost import's id was never recorded, and reading every lab on a
    busy worker is a call per lab (each one more chance to fail on a flaky worker).
    """
    known = set(LabRecord.objects.filter(worker=worker).exclude(cml_lab_id="").values_list("cml_lab_id", flat=True))
    for lab_id in cml.labs(show_all=True):
        if lab_id in known:
            continue
        try:
            if cml.get_lab(lab_id).get("lab_title") == title:
                return lab_id
        except http.NotFound:
            continue
    return None


# --- desired: booted ------------------------------------------------------------------------------


def boot(lab, cml, worker, *, topology: Callable[[], dict], actor) -> LabRecord:
    """Drive `lab` toward BOOTED: import it (`topology()`, ports rewritten) unless it is in CML already, start
    it, wait for its nodes to converge; returns the record (BOOTED, or STARTING while CML converges).

    A record left IMPORTING after an import was sent (`import_sent_at`) may have an import whose answer was
    lost, so CML is searched for its title first; a record that never sent one needs no search.
    """
    imported = ""
    if lab.status == L.IMPORTING:
        title = lab.title or lab_title(lab.pk)
        existing = find_by_title(cml, title, worker) if lab.import_sent_at else None
        if existing:
            lab = lab_record_transition(
                lab, L.DEFINED, actor=actor, reason="found after lost import", cml_lab_id=existing,
                cml_state=CML_DEFINED,
            )  # fmt: skip
        else:
            _mark_import_sent(lab)
            imported = cml.import_lab(topology(), title=title)
    if imported or lab.status in (L.DEFINED, L.WIPED, L.STOPPED):
        lab = _start(lab, cml, imported, actor=actor)
    if lab.status == L.STARTING:
        if not cml.check_converged(lab.cml_lab_id):
            return lab
        lab = lab_record_transition(lab, L.BOOTED, actor=actor, reason="converged", last_synced_at=timezone.now())
    if lab.status != L.BOOTED:
        raise http.ExternalError("cml", "instantiate", f"lab {lab.cml_lab_id} is {lab.status}")
    return lab


def _mark_import_sent(lab) -> None:
    """Record, before the import goes out, that one may now exist in CML (a bookkeeping column, no status)."""
    lab.import_sent_at = timezone.now()
    LabRecord.objects.filter(pk=lab.pk).update(import_sent_at=lab.import_sent_at)


def _start(lab, cml, imported: str, *, actor) -> LabRecord:
    """Start the lab (`imported`: its CML id when this pass imported it, not yet recorded).

    An import made in this pass is recorded with the start, in one write (a crash before it leaves the record
    IMPORTING, and the next pass finds the lab by its title); a failed start records it alone.
    """
    lab_id = imported or lab.cml_lab_id
    imported_steps, recorded = ([L.DEFINED], {"cml_lab_id": lab_id}) if imported else ([], {})
    try:
        # Starting a started lab is harmless, so a crash before this is recorded only repeats the start.
        cml.start_lab(lab_id)
        converged = cml.check_converged(lab_id)
    except Exception:
        if imported:
            lab_record_transition(lab, L.DEFINED, actor=actor, reason="imported", cml_state=CML_DEFINED, **recorded)
        raise
    if converged:  # booted at once (a fast worker): every step in one write
        return lab_record_transition(
            lab, L.BOOTED, via=[*imported_steps, L.STARTING], actor=actor, reason="started, converged",
            cml_state=CML_STARTED, last_synced_at=timezone.now(), **recorded,
        )  # fmt: skip
    return lab_record_transition(
        lab, L.STARTING, via=imported_steps, actor=actor, reason="start", cml_state=CML_STARTED, **recorded
    )


# --- desired: wiped for reuse, or deleted -------------------------------------------------------------


def tear_down(lab, cml_of: Callable, worker, *, delete: bool, actor) -> str | None:
    """Drive a session's lab toward wiped-and-unbound (or DELETED when `delete`); returns what it waits for
    (CML still stopping the lab), None when done. `cml_of()` gives the worker's CML client when one is needed."""
    if lab.status == L.WIPED and not delete:
        release(lab)
        return None
    if lab.status in (L.DELETED, L.ORPHANED):
        return None
    if not lab.cml_lab_id and lab.status == L.IMPORTING and lab.import_sent_at:
        found = find_by_title(cml_of(), lab.title or lab_title(lab.pk), worker)
        if found:
            lab = lab_record_transition(lab, L.DEFINED, actor=actor, reason="found after lost import", cml_lab_id=found)
    if not lab.cml_lab_id:
        lab_record_transition(lab, L.DELETED, actor=actor, reason="never imported")
        return None
    return _stop_and_wipe(lab, cml_of(), delete=delete, actor=actor)


def stop(lab, cml_of: Callable, *, actor) -> str | None:
    """Drive a session's lab toward stopped and kept, still bound (a lab held for review, SPEC §3.4); returns
    what it waits for, None when it is stopped (or there is nothing left to keep)."""
    if lab.status in (L.STOPPED, L.WIPED, L.DELETED, L.ORPHANED) or not lab.cml_lab_id:
        return None
    waiting, _lab = _stop(lab, cml_of(), actor=actor)
    return waiting


def _stop(lab, cml, *, actor) -> tuple[str | None, LabRecord | None]:
    """Stop the lab in CML: (what it waits for, None) while it stops; (None, the STOPPED record) when stopped;
    (None, None) when it vanished from CML (the record is then DELETED)."""
    try:
        state = cml.lab_state(lab.cml_lab_id)
    except http.NotFound:
        _walk_fresh(lab, [L.ORPHANED, L.DELETED], actor=actor, reason="vanished from CML", cml_state="")
        return None, None
    if state == CML_STARTED:
        cml.stop_lab(lab.cml_lab_id)
        _walk_fresh(lab, [L.STOPPING], actor=actor, reason="stopping", cml_state=state)
        return "stopping lab", None
    if state not in (CML_STOPPED, CML_DEFINED):
        return f"lab is {state}", None
    return None, _walk_fresh(lab, [L.STOPPING, L.STOPPED], actor=actor, reason="stopped", cml_state=state)


def _stop_and_wipe(lab, cml, *, delete: bool, actor) -> str | None:
    waiting, lab = _stop(lab, cml, actor=actor)
    if lab is None:
        return waiting
    if lab.status != L.WIPED:  # a wiped lab being deleted needs no second wipe
        cml.wipe_lab(lab.cml_lab_id)
    if delete:
        cml.delete_lab(lab.cml_lab_id)
        # DELETED releases the ports.
        _walk_fresh(lab, [L.DELETING, L.DELETED], actor=actor, reason="deleted", cml_state="")
    else:
        lab = _walk_fresh(lab, [L.WIPING, L.WIPED], actor=actor, reason="wiped for reuse", cml_state=CML_DEFINED)
        release(lab)
    return None


# --- observed: a session's lab still running (drift, SPEC §11) ---------------------------------------------

# The sessions whose lab must be running: READY and RUNNING (their status values, spelled here to keep this
# module free of the sessions app's states).
DRIFT_WATCHED = ("READY", "RUNNING")
# The records a re-instantiation drives to BOOTED as they are; any other is reset first (`reset_for_reimport`).
LIVE = frozenset({L.IMPORTING, L.DEFINED, L.STARTING, L.BOOTED})


def observe(lab, cml, *, actor) -> str | None:
    """Ask CML whether a session's booted lab still runs (one call); returns the problem, None when it runs.

    Gone from CML: the record goes ORPHANED (its ports kept for a re-instantiation); not STARTED: ERROR, with
    the state CML reports. A record marked so whose lab runs again (someone started it in CML) goes back to
    BOOTED. Network errors are raised: an unreachable worker is not a lab that drifted.
    """
    if lab.status == L.ORPHANED and not lab.cml_lab_id:
        return "its lab is gone from CML"
    try:
        state = cml.lab_state(lab.cml_lab_id)
    except http.NotFound:
        if lab.status != L.ORPHANED:
            lab_record_transition(lab, L.ORPHANED, actor=actor, reason="vanished from CML (drift check)", cml_state="")
        return f"its lab {lab.cml_lab_id} is gone from CML"
    now = timezone.now()
    if state != CML_STARTED:
        if lab.status != L.ERROR:
            lab_record_transition(
                lab, L.ERROR, actor=actor, reason=f"found {state} in CML (drift check)", cml_state=state
            )
        return f"its lab {lab.cml_lab_id} is {state} in CML, not running"
    if lab.status == L.ERROR:
        walk(lab, [L.STARTING, L.BOOTED], actor=actor, reason="running again in CML", cml_state=state)
    LabRecord.objects.filter(pk=lab.pk).update(last_synced_at=now, cml_state=state)
    return None


def reset_for_reimport(lab, cml, *, actor) -> LabRecord:
    """A drifted lab (ORPHANED or ERROR) made ready for a fresh import under the same record, keeping its ports:
    what is left of it in CML is stopped, wiped and deleted, then the record is IMPORTING again with no CML id.
    A crash between the two steps is finished by the next call (a lab already gone from CML is fine)."""
    if lab.status in LIVE:
        return lab
    if lab.cml_lab_id:
        try:
            if cml.lab_state(lab.cml_lab_id) == CML_STARTED:
                cml.stop_lab(lab.cml_lab_id)
            cml.wipe_lab(lab.cml_lab_id)
            cml.delete_lab(lab.cml_lab_id)
        except http.NotFound:
            pass
    return lab_record_transition(
        lab, L.IMPORTING, actor=actor, reason=f"re-instantiating (was {lab.cml_lab_id or 'gone'}): a fresh import",
        cml_lab_id="", cml_state="", import_sent_at=None, last_synced_at=None,
    )  # fmt: skip


# --- desired: known (discovery, the worker reconciler's periodic sync) ----------------------------------


def release_worker_labs(worker, *, actor, reason: str) -> None:
    """A terminated worker keeps no lab: every record not DELETED goes ORPHANED → DELETED (ports released)."""
    for lab in LabRecord.objects.filter(worker=worker).exclude(status=L.DELETED):
        walk(lab, [L.ORPHANED, L.DELETED], actor=actor, reason=reason)


def sync_labs(worker, cml, *, actor) -> None:
    """Lab discovery: labs in CML that LCM does not know are recorded (ORPHANED, their ports reserved); labs LCM
    knows that are gone from CML are DELETED (their ports released), except the lab of a READY or RUNNING
    session: its drift is the lablet reconciler's (`observe`), which keeps the ports for a re-instantiation."""
    in_cml = set(cml.labs(show_all=True))
    known = dict(LabRecord.objects.filter(worker=worker).exclude(cml_lab_id="").values_list("cml_lab_id", "status"))
    in_use = set(
        LabRecord.objects.filter(worker=worker, active_session__status__in=DRIFT_WATCHED).values_list(
            "cml_lab_id", flat=True
        )
    )
    for lab_id, status in known.items():
        if lab_id in in_cml or status == L.DELETED or lab_id in in_use:
            continue
        try:
            cml.get_lab(lab_id)
            continue  # imported after the list was read
        except http.NotFound:
            pass
        lab = LabRecord.objects.get(worker=worker, cml_lab_id=lab_id)
        walk(lab, [L.ORPHANED, L.DELETED], actor=actor, reason="vanished from CML", cml_state="")
    for lab_id in sorted(in_cml - set(known)):
        _record_unknown(worker, cml, lab_id, actor=actor)


def _record_unknown(worker, cml, lab_id: str, *, actor) -> None:
    try:
        info = cml.get_lab(lab_id)
    except http.NotFound:
        return
    title = str(info.get("lab_title") or "")
    if _being_imported(title):
        return
    try:
        record = lab_record_create(
            worker=worker,
            actor=actor,
            cml_lab_id=lab_id,
            title=title[:300],
            status=L.ORPHANED,
            node_count=int(info.get("node_count") or 0),
        )
    except Exception as exc:  # recorded meanwhile by another pass (unique per worker and lab id)
        logger.info("lab %s on %s not recorded: %s", lab_id, worker.name, exc)
        return
    LabRecord.objects.filter(pk=record.pk).update(cml_state=str(info.get("state") or ""))
    reserved = lab_record_reserve_ports(record, _node_ports(cml, lab_id))
    logger.info("unknown lab %s (%r) on %s recorded, ports %s reserved", lab_id, title, worker.name, reserved)


def _being_imported(title: str) -> bool:
    """An import of the lablet reconciler whose answer it has not recorded yet: titled `lab_title(record id)` of a
    record still IMPORTING (an import landing after its record was given up is an unknown lab like any other)."""
    record_id = record_id_of(title)
    return record_id is not None and LabRecord.objects.filter(pk=record_id, status=L.IMPORTING).exists()


def _node_ports(cml, lab_id) -> dict[str, int]:
    """`{<node label>_<protocol>: port}` from the lab's `protocol:port` node tags."""
    ports: dict[str, int] = {}
    for node in cml.nodes(lab_id):
        for tag in node.get("tags") or []:
            try:
                parsed = parse_port_tag(tag)
            except PortTagError:
                continue  # a lab found in CML is not ours to validate: a malformed tag names no port
            if parsed:
                ports[f"{node.get('label') or node.get('id')}_{parsed.protocol}"] = parsed.port
    return ports
