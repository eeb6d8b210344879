"""Lab drift (SPEC §11): a READY or RUNNING session whose lab is gone or stopped in CML, and its re-instantiation.

Desired state: the lab of a READY/RUNNING session runs in CML. The lablet reconciler's READY and RUNNING steps
call `watch` on each pass:
- when a re-instantiation was asked for (`session_reinstantiate`, the "Re-instantiate" button): the session's
  lab record is reset for a fresh import (what is left of the old lab in CML deleted, the record IMPORTING
  again with the same ports: `workers.labs.reset_for_reimport`), imported with the session's ports written
  into the topology, started and booted (`workers.labs.boot`); then the flag is cleared with a history row.
  The candidate's LDS devices stay valid: same worker, same ports. The session keeps its status throughout
  (there is no transition back to READY in SPEC §2.2; degraded is a flag, not a state).
- otherwise, at most once per `LCM_DRIFT_CHECK_SECONDS` (the tick's query selects sessions whose check is
  due; `lab_checked_at` records each check): the lab reconciler asks CML about the lab (`workers.labs.observe`,
  one call); a missing or stopped lab marks the session degraded (`session_mark_degraded`), a lab running
  again clears it. CML unreachable is not drift: the check is logged and retried at the next interval (the
  worker's own trouble is an attention item of its own).
Every step is recorded before the next one goes out, so a crash anywhere is finished by the next pass.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction

from lcm import http
from lcm.reconcile import Result
from sessions.candidate import ACTOR
from sessions.labyaml import rewritten_topology
from sessions.services import (
    session_attach_lab,
    session_clear_degraded,
    session_lab_checked,
    session_mark_degraded,
)
from workers import labs
from workers.clients.cml import cml_client_for
from workers.states import LabStatus

logger = logging.getLogger("lcm.sessions.drift")

POLL_SECONDS = 1.0


def check_interval() -> timedelta | None:
    """How often a session's lab is checked (None: the check is off)."""
    seconds = float(settings.LCM_DRIFT_CHECK_SECONDS)
    return timedelta(seconds=seconds) if seconds > 0 else None


def check_due(session, now) -> bool:
    interval = check_interval()
    if interval is None or session.lab_record_id is None:
        return False
    return session.lab_checked_at is None or now - session.lab_checked_at >= interval


def watch(session, now) -> Result | None:
    """The drift step of a READY/RUNNING pass: a requested re-instantiation, else a due check; a Result while a
    fresh lab is coming up, None otherwise (the caller's own step goes on)."""
    if session.reinstantiate_requested_at is not None:
        return reinstantiate(session)
    if check_due(session, now):
        check(session, now)
    return None


def check(session, now) -> str | None:
    """Ask CML once about the session's lab; flag or clear the session. Returns the problem, if any."""
    session_lab_checked(session, now)
    lab = session.lab_record
    try:
        problem = labs.observe(lab, cml_client_for(session.worker), actor=ACTOR)
    except http.ExternalError as exc:
        logger.info("drift check of session %s: CML did not answer (%s); next check in one interval", session.pk, exc)
        return None
    if problem:
        if session.degraded_at is None:
            logger.warning("session %s is degraded: %s", session.pk, problem)
            session_mark_degraded(session, problem, actor=ACTOR)
    elif session.degraded_at is not None:
        session_clear_degraded(session, actor=ACTOR, reason="its lab runs again in CML: no longer degraded")
    return problem


def reinstantiate(session) -> Result | None:
    """Drive a fresh lab for the session on its worker with its ports to BOOTED, then clear the flag."""
    cml = cml_client_for(session.worker)
    lab = session.lab_record
    old_lab_id = session.cml_lab_id
    if lab is None:  # no record left to reset (never expected of a READY session): a new one with fresh ports
        with transaction.atomic():
            lab, ports = labs.new_lab(session, session.definition, session.worker, actor=ACTOR)
            session = session_attach_lab(session, lab, ports=ports)
    lab = labs.reset_for_reimport(lab, cml, actor=ACTOR)
    ports = session.allocated_ports or lab.ports
    lab = labs.boot(
        lab, cml, session.worker, topology=lambda: rewritten_topology(session.definition.lab_yaml, ports), actor=ACTOR
    )
    if lab.status != LabStatus.BOOTED:
        return Result.requeue(POLL_SECONDS, "re-instantiating: waiting for nodes to boot")
    session_attach_lab(session, lab, ports=ports)
    session_clear_degraded(
        session,
        actor=ACTOR,
        reason=f"re-instantiated: fresh lab {lab.cml_lab_id} (was {old_lab_id or 'none'}) booted with the same ports",
    )
    logger.info("session %s re-instantiated on lab %s", session.pk, lab.cml_lab_id)
    return None
