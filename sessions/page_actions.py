"""The buttons of a session's page (SPEC §5.4) and what each does through the services.

Every button that takes something from the candidate or the lab (Finish, Skip/Complete Grading, Archive,
Terminate, Requeue, Re-instantiate) asks first (issue 19), naming what it touches. With JavaScript the page
asks in a `confirm()` dialog (`hx-confirm`) and the request then carries `confirmed=1`; a form posted without
it (no JavaScript, or a script) gets the confirm page instead, with what was posted carried along, and
changes nothing until that page is confirmed. Requeue always goes through its page: it explains itself and
offers "do not place it on this worker again".
"""

from dataclasses import dataclass, replace

from django.core.exceptions import ValidationError
from django.db import transaction

from lcm import loops
from lcm.roles import is_admin
from sessions.forms import ExtendForm, ManualScoreForm
from sessions.services import session_end_hold, session_reinstantiate, session_requeue, session_transition
from sessions.states import GradingMode, SessionStatus

S = SessionStatus


@dataclass(frozen=True)
class SessionAction:
    """One button of the SPEC §5.4 table: its label, the states it applies to and what it does.

    `confirm` is the question asked first ({owner}, {worker} and {after} are filled in per session);
    `page_only`: the question needs more than a dialog (its confirm page is the only way)."""

    slug: str
    label: str
    valid_from: frozenset
    target: str | None = None  # a plain transition; None = a special action below
    style: str = "primary"
    confirm: str = ""
    page_only: bool = False

    def prompt(self, session) -> str:
        """The confirmation question for this session ("" when the action does not ask)."""
        if not self.confirm:
            return ""
        worker = session.worker.name if session.worker_id else "no worker yet"
        return self.confirm.format(owner=session.owner, worker=worker, after=_after_finish(session))


def _after_finish(session) -> str:
    mode = session.definition.grading_mode
    if mode == GradingMode.AUTO:
        return "grading starts and then the lab is stopped and wiped"
    if mode == GradingMode.MANUAL:
        return "the session waits for an instructor to grade it"
    return "the lab is stopped and wiped"


_TERMINATE_FROM = frozenset({S.READY, S.RUNNING, S.GRADING, S.PENDING, S.SCHEDULED, S.INSTANTIATING})
SESSION_ACTIONS = {
    a.slug: a
    for a in (
        SessionAction("start", "Start Session", frozenset({S.READY}), S.RUNNING),
        SessionAction(
            "finish",
            "Finish Session",
            frozenset({S.RUNNING}),
            S.COLLECTING,
            confirm="Finish the session of {owner}? The candidate loses access to the lab on {worker} now; {after}.",
        ),
        SessionAction("start-grading", "Start Grading", frozenset({S.COLLECTING}), S.GRADING),
        SessionAction(
            "skip-grading",
            "Skip Grading",
            frozenset({S.COLLECTING}),
            S.STOPPING,
            "secondary",
            "Skip grading for {owner}? No score is recorded, and the lab on {worker} is stopped and wiped.",
        ),
        SessionAction(
            "complete-grading",
            "Complete Grading",
            frozenset({S.GRADING}),
            S.STOPPING,
            confirm="Complete grading of {owner}? The grading is closed (with the manual score, if given) and "
            "the lab on {worker} is stopped and wiped.",
        ),
        SessionAction(
            "archive",
            "Archive",
            frozenset({S.STOPPED}),
            S.ARCHIVED,
            confirm="Archive the session of {owner}? The review hold ends: the lab kept on {worker} is wiped "
            "and can no longer be inspected.",
        ),
        SessionAction(
            "terminate",
            "Terminate",
            _TERMINATE_FROM,
            S.TERMINATED,
            "danger",
            "Terminate this session? {owner}'s lab on {worker} is torn down and the candidate loses access. "
            "This cannot be undone.",
        ),
        SessionAction(
            "extend",
            "Extend",
            frozenset({S.PENDING, S.SCHEDULED, S.INSTANTIATING, S.READY, S.RUNNING}),
            style="secondary",
        ),
        SessionAction(
            "requeue",
            "Requeue",
            frozenset({S.SCHEDULED}),
            style="secondary",
            confirm="Requeue the session of {owner}? It leaves {worker} and goes back to PENDING.",
            page_only=True,
        ),
        # SPEC §11: only on a degraded session (its lab gone or stopped in CML), besides the state's buttons.
        SessionAction(
            "reinstantiate",
            "Re-instantiate",
            frozenset({S.READY, S.RUNNING}),
            style="primary",
            confirm="Re-instantiate this session? What is left of {owner}'s lab is deleted and a fresh lab is "
            "brought up on {worker} with the same ports; work on the old devices is lost.",
        ),
    )
}
# SPEC §5.4: exactly these buttons, in this order, per state; no other state has any.
SESSION_BUTTONS = {
    S.READY: ("start", "terminate", "extend"),
    S.RUNNING: ("finish", "terminate", "extend"),
    S.COLLECTING: ("start-grading", "skip-grading"),
    S.GRADING: ("complete-grading", "terminate"),
    S.STOPPED: ("archive",),
    S.PENDING: ("terminate", "extend"),
    S.SCHEDULED: ("terminate", "extend", "requeue"),
    S.INSTANTIATING: ("terminate", "extend"),
}


def session_buttons(session) -> list[SessionAction]:
    """The buttons of SPEC §5.4 for this session, only where they act: Start/Skip Grading only when its
    definition grades by hand (otherwise the loop moves COLLECTING on), Archive only while held for review.
    Each carries its confirmation question for this session in `confirm`."""
    slugs = SESSION_BUTTONS.get(session.status, ())
    if session.status == S.COLLECTING and session.definition.grading_mode != GradingMode.MANUAL:
        slugs = ()
    if session.status == S.STOPPED and session.hold_until is None:
        slugs = ()
    if session.status in (S.READY, S.RUNNING) and session.degraded_at and not session.reinstantiate_requested_at:
        slugs = ("reinstantiate", *slugs)
    return [replace(SESSION_ACTIONS[slug], confirm=SESSION_ACTIONS[slug].prompt(session)) for slug in slugs]


def needs_confirmation(spec: SessionAction, post) -> bool:
    """A button that asks first, posted without `confirmed=1`."""
    return bool(spec.confirm) and post.get("confirmed") != "1"


def carried_fields(post) -> list[tuple[str, str]]:
    """What an unconfirmed post sent (its extend or score fields), for the confirm page to post again."""
    return [
        (name, value)
        for name in post
        if name not in ("csrfmiddlewaretoken", "confirmed", "expected", "exclude_worker")
        for value in post.getlist(name)
    ]


def run_session_action(request, session, spec: SessionAction, expected: str, forms: dict) -> str:
    """Do what the button asks through the services; returns the message for the user."""
    actor = request.user
    if spec.slug == "extend":
        form = ExtendForm(request.POST)
        extended = form.submit(session, actor=actor, is_admin=is_admin(actor)) if form.is_valid() else None
        if extended is None:
            forms["extend_form"] = form
            raise ValidationError([e for errors in form.errors.values() for e in errors])
        return f"Timeslot extended to {extended.timeslot_end:%Y-%m-%d %H:%M} UTC."
    if spec.slug == "archive":  # SPEC §3.4: only a held session shows it; the loop wipes the lab, then archives
        session_end_hold(session, actor=actor, reason="review hold ended from the session page")
        return "Archiving: the held lab is wiped, then the session is ARCHIVED."
    if spec.slug == "requeue":
        exclude = request.POST.get("exclude_worker") == "1"
        session_requeue(session, actor=actor, reason="requeued from the session page", exclude_worker=exclude)
        return "Session requeued: it is PENDING and will be placed again" + (
            ", not on the worker it left." if exclude else "."
        )
    if spec.slug == "reinstantiate":
        session_reinstantiate(session, actor=actor, reason="Re-instantiate from the session page")
        transaction.on_commit(lambda: loops.enqueue("lablets", session.pk))  # a status-less change: no watcher wakes it
        return "Re-instantiating: a fresh lab with the same ports is coming up."
    if spec.slug == "complete-grading":
        form = ManualScoreForm(request.POST)
        if not form.is_valid():
            forms["score_form"] = form
            raise ValidationError([e for errors in form.errors.values() for e in errors])
        # The manual report is stored in the move's own transaction (the grading app's STOPPING hook), so a
        # refused move leaves none behind.
        session_transition(
            session, spec.target, actor=actor, expected_status=expected, reason="grading completed by hand",
            manual_score=dict(form.cleaned_data) if form.has_score else None,
        )  # fmt: skip
        return "Grading completed; the session is STOPPING."
    session_transition(
        session, spec.target, actor=actor, expected_status=expected, reason=f"{spec.label} from the session page"
    )
    return f"{spec.label}: the session is now {spec.target}."
