"""The LDS simulator's state: sessions and parts, the session/part state machine of EXTERNAL-SYSTEMS.md §3.3
with its time-driven steps, the content catalogue and the CloudEvents of §3.4 (see `simulators.lds.app`)."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import jwt

from simulators.common import iso
from simulators.common_stateful import SimError

API = "/reservations/v3"

SESSION_PENDING = "SESSION_PENDING"
SESSION_PRELAUNCH = "SESSION_PRELAUNCH"
SESSION_RUNNING = "SESSION_RUNNING"
SESSION_PAUSED = "SESSION_PAUSED"
SESSION_USER_FINISHED = "SESSION_USER_FINISHED"
SESSION_TIMEOUT = "SESSION_TIMEOUT"
SESSION_FINALIZED = "SESSION_FINALIZED"
ENDED_STATES = {SESSION_USER_FINISHED, SESSION_TIMEOUT, SESSION_FINALIZED}

PART_PENDING = "SESSION_PART_PENDING"
PART_RUNNING = "SESSION_PART_RUNNING"
PART_PAUSED = "SESSION_PART_PAUSED"
PART_USER_FINISHED = "SESSION_PART_USER_FINISHED"
PART_TIMEOUT = "SESSION_PART_TIMEOUT"
PART_FINALIZED = "SESSION_PART_FINALIZED"

# Event names per naming family (EXTERNAL-SYSTEMS.md §3.4); the family follows the configured prefix.
EVENT_TYPES = {
    "io.lablet": {
        "running": "session.running.v1",
        "paused": "session.paused.v1",
        "resumed": "session.running.v1",
        "user_finished": "session.ended.v1",
        "timeout": "session.ended.v1",
        "finalized": "session.finalized.v1",
    },
    "com.cisco": {
        "running": "session.running.v1",
        "paused": "session.paused.v1",
        "resumed": "session.restarted.v1",
        "user_finished": "session.userfinished.v1",
        "timeout": "session.ended.v1",
        "finalized": "session.finalized.v1",
    },
}


@dataclass
class Part:
    """One LDS session part: its content, devices, variables, state and timer (epoch seconds)."""

    repository_type: str = "svn"
    form_qualified_name: str | None = None
    track: str | None = None
    exam_version: str | None = None
    variables: dict = field(default_factory=dict)
    devices: list = field(default_factory=list)
    state: str = PART_PENDING
    timer_started_at: float | None = None
    length_seconds: float = 3600.0
    extra_seconds: float = 0.0
    # The session's `user_timeslot_end` (epoch), when it has one: the candidate's access ends there at the
    # latest, whenever they logged in.
    slot_ends_at: float | None = None
    responses: dict = field(default_factory=dict)

    @property
    def max_ends_at(self) -> float | None:
        """When the candidate is cut off: the earlier of the timer's end (once it runs) and the timeslot's
        end, moved by every extension and adjustment."""
        ends = []
        if self.timer_started_at is not None:
            ends.append(self.timer_started_at + self.length_seconds)
        if self.slot_ends_at is not None:
            ends.append(self.slot_ends_at)
        return min(ends) + self.extra_seconds if ends else None

    def to_json(self) -> dict:
        out = {"repository_type": self.repository_type}
        for name in ("form_qualified_name", "track", "exam_version"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out["session_part_state"] = self.state
        if self.timer_started_at is not None:
            ends = self.max_ends_at
            warning = ends - min(300.0, self.length_seconds / 10)
            out["timer"] = {
                "min_ends_at": epoch_iso(self.timer_started_at),
                "max_ends_at": epoch_iso(ends),
                "warning_at": epoch_iso(warning),
                "warning_message": f"{round((ends - warning) / 60)} minutes remaining",
            }
        out["variables"] = dict(self.variables)
        return out


@dataclass
class LdsSession:
    """One LDS session (reservation) with its parts and status history."""

    id: str
    fields: dict
    created: float
    parts: list[Part]
    state: str = SESSION_PENDING
    is_finalized: bool = False
    paused_at: float | None = None
    current_part: int = 1
    launch_fetched_at: float | None = None
    logged_in_at: float | None = None
    session_statuses: list = field(default_factory=list)
    part_statuses: list = field(default_factory=list)

    @property
    def part(self) -> Part | None:
        return self.parts[self.current_part - 1] if 0 < self.current_part <= len(self.parts) else None


def epoch_iso(epoch: float) -> str:
    return iso(datetime.fromtimestamp(epoch, UTC))


class LdsStateMachine:
    """The sessions, catalogue and state machine of one LDS deployment, mixed into `LDSSimulator` (which
    provides `clock`, `timings`, `timing()`, `faults`, `events`, `wakeups` and `signing_key`). Callers hold
    the simulator's lock."""

    sessions: dict[str, LdsSession]
    catalogue: dict[str, dict]
    open_catalogue: bool

    # -- lookups -----------------------------------------------------------------------------

    def _session(self, ldssession_id: str) -> LdsSession:
        session = self.sessions.get(ldssession_id)
        if session is None:
            raise SimError(404, f"LDS session {ldssession_id} not found")
        self._progress(session)
        return session

    def _open_session(self, ldssession_id: str) -> LdsSession:
        """A session that may still change (not finalized)."""
        session = self._session(ldssession_id)
        if session.is_finalized:
            raise SimError(409, f"LDS session {ldssession_id} is finalized")
        return session

    @staticmethod
    def _part(session: LdsSession, part_num: int) -> Part:
        if not 1 <= part_num <= len(session.parts):
            raise SimError(404, f"LDS session {session.id} has no part {part_num}")
        return session.parts[part_num - 1]

    # -- content -----------------------------------------------------------------------------

    def _known(self, fqn: str) -> bool:
        return self.open_catalogue or fqn in self.catalogue

    def _folder(self, fqn: str) -> dict:
        if not self._known(fqn):
            raise SimError(404, f"no content for {fqn}")
        return self.catalogue.setdefault(fqn, self._lab_folder(fqn))

    def _lab_folder(self, fqn: str) -> dict:
        return {
            "DatePublished": iso(self.clock.now()),
            "Version": "1",
            "Publisher": "lcm-simulator",
            "Layout": "lablet",
            "FormName": fqn,
            "FormStatus": "Published",
            "FormId": fqn,
            "FormSetId": fqn,
            "ModuleId": fqn,
            "ModuleTypeName": "Lab",
            "ExamId": fqn.split("-")[0],
            "ExamVersion": "1.0",
            "TrackId": "lcm",
            "TrackShortName": "LCM",
            "TrackLongName": "Lablet Cloud Manager",
            "InstanceRegion": "local",
        }

    # -- state machine -----------------------------------------------------------------------

    def _apply_length(self, session: LdsSession) -> None:
        minutes = session.fields.get("max_length_minutes") or self.timings["session_minutes"]
        slot_end = session.fields.get("user_timeslot_end")
        slot_ends_at = datetime.fromisoformat(slot_end).timestamp() if slot_end else None
        for part in session.parts:
            part.length_seconds = float(minutes) * 60
            part.slot_ends_at = slot_ends_at
        self._schedule_end(session)

    def _schedule_end(self, session: LdsSession) -> None:
        """Wake up when the current part's end comes (it moves with extensions, so each move asks again)."""
        if session.part is not None and session.part.max_ends_at is not None:
            self._schedule(session.part.max_ends_at, session.id)

    def _session_json(self, session: LdsSession) -> dict:
        fields = {k: v for k, v in session.fields.items() if k not in ("user_timeslot_end", "max_length_minutes")}
        out = {"id": session.id} | fields
        out |= {
            "state": session.state,
            "is_finalized": session.is_finalized,
            "log_id": f"SID={session.id}",
            "active_reservation": not session.is_finalized,
            "timer_paused": session.state == SESSION_PAUSED,
            "created": epoch_iso(session.created),
            "current_session_part": session.current_part,
            "session_parts": [part.to_json() for part in session.parts],
        }
        if session.fields.get("max_length_minutes") or session.fields.get("user_timeslot_end"):
            out["practice_lab"] = self._practice_lab(session)
        return out

    def _practice_lab(self, session: LdsSession) -> dict:
        practice = {
            "max_length_minutes": session.fields.get("max_length_minutes") or self.timings["session_minutes"],
            "grace_period": 0,
            "user_timeslot_start": session.fields["scheduled_date"],
        }
        if session.fields.get("user_timeslot_end"):
            practice["user_timeslot_end"] = session.fields["user_timeslot_end"]
        if session.part and session.part.max_ends_at is not None:
            practice["max_ends_at"] = epoch_iso(session.part.max_ends_at)
        return practice

    def _log_status(self, session: LdsSession, state: str | None, part_states: dict[int, str]) -> None:
        now = int(self.clock.time())
        if state is not None:
            session.state = state
            session.session_statuses.append(
                {"new_status": state, "session_part": session.current_part, "timestamp": now}
            )
        for number, part_state in part_states.items():
            session.parts[number - 1].state = part_state
            session.part_statuses.append({"new_status": part_state, "session_part": number, "timestamp": now})

    def _emit(self, kind: str, session: LdsSession, **extra) -> None:
        data = {"aggregateId": session.id, "sessionId": session.id, "state": session.state} | extra
        self.events.emit(self.event_types[kind], session.id, data)

    def _delay(self, name: str) -> float | None:
        """A configured delay in seconds (0 in zero-delay mode), or None when the step is switched off."""
        return None if self.timings.get(name) is None else self.timing(name)

    def _schedule(self, at: float, session_id: str) -> None:
        """Wake up at clock time `at` so a due step (and its CloudEvent) happens without a caller."""
        self.wakeups.at(at, session_id)

    def _progress(self, session: LdsSession) -> None:
        """Apply every time-driven step that is due by now (idempotent)."""
        now = self.clock.time()
        login_delay = self._delay("auto_login_after")
        if (
            session.state == SESSION_PRELAUNCH
            and login_delay is not None
            and session.launch_fetched_at + login_delay <= now
        ):
            self._login(session, at=session.launch_fetched_at + login_delay)
        if session.state != SESSION_RUNNING:
            return
        due = []
        finish_delay = self._delay("auto_finish_after")
        if finish_delay is not None and session.logged_in_at + finish_delay <= now:
            due.append((session.logged_in_at + finish_delay, "finish"))
        part = session.part
        if part is not None and part.max_ends_at is not None and part.max_ends_at <= now:
            due.append((part.max_ends_at, "timeout"))
        if due:
            _, step = min(due)
            if step == "finish":
                self._finish(session, reason="auto-finish")
            else:
                self._timeout(session)

    def _launch_token(self, session: LdsSession) -> str:
        now = self.clock.time()
        expired = self.faults.flag("expire_tokens")
        ttl = float(self.timings["launch_token_ttl"])
        claims = {
            "iss": "lds-simulator",
            "aud": "lablet",
            "sub": session.id,
            "iat": int(now),
            "exp": int(now - 1) if expired else int(now + ttl),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.signing_key, algorithm="HS256")

    def _launch_fetched(self, session: LdsSession) -> None:
        if session.state != SESSION_PENDING:
            return
        session.launch_fetched_at = self.clock.time()
        self._log_status(session, SESSION_PRELAUNCH, {})
        delay = self._delay("auto_login_after")
        if delay is not None:
            self._schedule(session.launch_fetched_at + delay, session.id)

    def _login(self, session: LdsSession, at: float | None = None) -> None:
        if session.state in (SESSION_RUNNING, SESSION_PAUSED):
            return
        at = self.clock.time() if at is None else at
        session.logged_in_at = at
        part_states = {}
        if session.part is not None:
            session.part.timer_started_at = at
            part_states[session.current_part] = PART_RUNNING
            self._schedule(session.part.max_ends_at, session.id)
        self._log_status(session, SESSION_RUNNING, part_states)
        self._emit("running", session)
        delay = self._delay("auto_finish_after")
        if delay is not None:
            self._schedule(at + delay, session.id)

    def _finish(self, session: LdsSession, *, reason: str, ended_by: str = "user") -> None:
        part_states = {n: PART_USER_FINISHED for n, p in enumerate(session.parts, 1) if p.state != PART_TIMEOUT}
        self._log_status(session, SESSION_USER_FINISHED, part_states)
        self._emit("user_finished", session, reason=reason, endedBy=ended_by)

    def _timeout(self, session: LdsSession) -> None:
        self._log_status(session, SESSION_TIMEOUT, {session.current_part: PART_TIMEOUT})
        self._emit("timeout", session, reason="the part timer expired", endedBy="timeout")

    def _pause(self, session: LdsSession) -> None:
        if session.state != SESSION_RUNNING:
            raise SimError(409, f"only a running session can be paused (it is {session.state})")
        session.paused_at = self.clock.time()
        self._log_status(session, SESSION_PAUSED, {session.current_part: PART_PAUSED})
        self._emit("paused", session, reason="paused by the manager")

    def _resume(self, session: LdsSession) -> None:
        if session.state != SESSION_PAUSED:
            raise SimError(409, f"only a paused session can be resumed (it is {session.state})")
        # The part timer does not run while paused.
        if session.part is not None and session.paused_at is not None:
            session.part.extra_seconds += self.clock.time() - session.paused_at
            self._schedule(session.part.max_ends_at, session.id)
        session.paused_at = None
        self._log_status(session, SESSION_RUNNING, {session.current_part: PART_RUNNING})
        self._emit("resumed", session, reason="resumed by the manager")

    def _release(self, session: LdsSession) -> None:
        if session.is_finalized:
            return
        session.is_finalized = True
        self._log_status(session, SESSION_FINALIZED, {n: PART_FINALIZED for n in range(1, len(session.parts) + 1)})
        self._emit("finalized", session, reason="released", endedBy="admin")
