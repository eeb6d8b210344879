"""The candidate's LDS session, as the session reconciler drives it (SPEC §3.3, §3.4, §3.4a).

Opened when the lab is booted (`ensure_lds_session`: the session, its devices, the launch URL), kept in
step with the timeslot while the candidate may work (`converge_lds_end`: an extension reaches LDS), closed
to the candidate when RUNNING is left (`end_candidate_access`), released at teardown (`release_lds`).
Every step is resumable: a pass may stop between any two calls and the next one carries on.
"""

import contextlib
import math
from urllib.parse import urlparse

from django.utils.dateparse import parse_datetime

from lcm import http
from sessions.clients.lds import lds_client
from sessions.models import UserSession
from sessions.services import record_session_note, user_session_create, user_session_update
from sessions.states import UserSessionStatus
from workers.states import PORT_PROTOCOLS

ACTOR = "lablet-reconciler"
USER_SESSION_DONE = {UserSessionStatus.ENDED, UserSessionStatus.EXPIRED, UserSessionStatus.FAULTED}
_IN_USE = [UserSessionStatus.PROVISIONED, UserSessionStatus.ACTIVE, UserSessionStatus.PAUSED]


def lds():
    return lds_client()


def devices_of(session) -> list[dict]:
    """One device per node: label, protocol by priority (vnc, http, https, ssh, serial, telnet), host, port."""
    host = session.worker.public_ip or session.worker.private_ip or urlparse(session.worker.cml_base_url).hostname
    by_node: dict[str, list[dict]] = {}
    for entry in session.definition.port_template:
        by_node.setdefault(entry["node_label"], []).append(entry)
    devices = []
    ports = session.allocated_ports or {}
    for label, entries in by_node.items():
        entries.sort(key=lambda e: PORT_PROTOCOLS.index(e["protocol"]))
        best = entries[0]
        devices.append(
            {"label": label, "protocol": best["protocol"], "host": host or "", "port": ports.get(best["name"])}
        )
    return devices


def ensure_lds_session(session) -> tuple[UserSession, tuple | None]:
    """The UserSession with an LDS session, and its devices and launch URL (each step resumable).

    Returns the user session and, when this pass set its devices and made its launch URL, what to
    record of them with the move to READY (`session_transition`'s `provisioned`).
    """
    client = lds()
    user_session = session.user_sessions.exclude(status__in=USER_SESSION_DONE).order_by("-created_at").first()
    if user_session is None or not user_session.lds_session_id:
        created = client.create_session(
            candidate_id=session.owner,
            form_qualified_name=session.definition.form_qualified_name or session.definition.name,
            first_name=session.owner.split("@")[0][:50] or "candidate",
            last_name="-",
            scheduled_date=session.timeslot_start,
            user_timeslot_end=session.timeslot_end,
        )
        # Recorded at once: the LDS API has no lookup by our reference, so an id not recorded is lost.
        ids = {"lds_session_id": created.session_id, "lds_part_id": "1", "lds_ends_at": session.timeslot_end}
        if user_session is None:
            user_session = user_session_create(session, actor=ACTOR, reason="LDS session created", **ids)
        else:
            user_session = user_session_update(user_session, actor=ACTOR, **ids)
    if user_session.login_url:
        return user_session, None
    devices = devices_of(session)
    client.set_devices(user_session.lds_session_id, devices)
    url = client.launch_url(user_session.lds_session_id)
    fields = {
        "devices": devices,
        "login_url": url,
        "status": UserSessionStatus.PROVISIONED,
        "reason": "devices set, launch URL issued",
    }
    return user_session, (user_session, fields)


def converge_lds_end(session) -> None:
    """Level-triggered (SPEC §3.4a): the end LDS holds for the candidate follows `timeslot_end`, so an extension
    reaches them. Only when the recorded end differs is LDS read; it is extended by what it lacks."""
    user_session = session.user_sessions.filter(status__in=_IN_USE).exclude(lds_session_id="").first()
    if user_session is None or user_session.lds_ends_at == session.timeslot_end:
        return
    client = lds()
    observed = lds_end_of(client.get_session(user_session.lds_session_id)) or user_session.lds_ends_at
    if observed is not None and observed < session.timeslot_end:
        minutes = math.ceil((session.timeslot_end - observed).total_seconds() / 60)
        client.extend_part(user_session.lds_session_id, minutes)
    reason = f"LDS end moved to {session.timeslot_end:%Y-%m-%dT%H:%M:%SZ}"
    user_session_update(user_session, actor=ACTOR, lds_ends_at=session.timeslot_end, reason=reason)
    record_session_note(session, actor=ACTOR, reason=reason)


def lds_end_of(answer: dict):
    """When LDS will cut the candidate off, from its session (`practice_lab.max_ends_at`, else the current
    part's timer); None when it does not say."""
    practice = answer.get("practice_lab") or {}
    parts = answer.get("session_parts") or []
    current = answer.get("current_session_part") or 1
    timer = (parts[current - 1].get("timer") or {}) if 0 < current <= len(parts) else {}
    value = practice.get("max_ends_at") or timer.get("max_ends_at")
    return parse_datetime(value) if isinstance(value, str) else None


def end_candidate_access(session, why: str) -> None:
    """Leaving RUNNING ends the candidate's LDS access first (SPEC §3.4), so nobody works on the devices while
    they are collected, graded or torn down; the user session ends ENDED (a normal end)."""
    for user_session in session.user_sessions.filter(status__in=_IN_USE[1:]).exclude(lds_session_id=""):
        with contextlib.suppress(http.Conflict, http.NotFound):  # already finished, timed out or released
            lds().force_user_finished(user_session.lds_session_id)
        user_session_update(user_session, actor=ACTOR, status=UserSessionStatus.ENDED, reason=f"access ended: {why}")


def release_lds(user_session) -> None:
    """Release a user session's LDS session at teardown; one never used ends FAULTED ("released before use")."""
    if user_session.lds_session_id:
        with contextlib.suppress(http.NotFound):
            lds().release(user_session.lds_session_id)
    target = {
        UserSessionStatus.ACTIVE: UserSessionStatus.ENDED,
        UserSessionStatus.PAUSED: UserSessionStatus.ENDED,
    }.get(user_session.status, UserSessionStatus.FAULTED)
    user_session_update(
        user_session,
        actor=ACTOR,
        status=target,
        reason="released",
        error_message="" if target == UserSessionStatus.ENDED else "released before use",
    )
