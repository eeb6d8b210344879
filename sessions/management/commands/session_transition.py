"""`manage.py session_transition`: a manual status change (SPEC §5.1 manual targets) through the service."""

from lcm.fsm import normalize_status
from lcm.management.command_utils import LcmCommand, fail, service_errors
from sessions.management.command_utils import get_session, session_data, session_summary
from sessions.services import session_transition
from sessions.states import MANUAL_TARGETS, SessionStatus


class Command(LcmCommand):
    help = (
        "Move a session to RUNNING, COLLECTING, GRADING, STOPPING or ARCHIVED "
        "(refused unless the state machine allows it; use session_terminate to terminate)."
    )

    def add_arguments(self, parser):
        parser.add_argument("session_id", help="The session id (UUID).")
        parser.add_argument("status", help="Target status (any case).")
        parser.add_argument("--reason", default="", help="Reason recorded in the history.")
        parser.add_argument("--expected", help="Only move if the session is currently in this status.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        try:
            target = normalize_status(options["status"], SessionStatus)
            expected = normalize_status(options["expected"], SessionStatus) if options["expected"] else None
        except ValueError as exc:
            raise fail(exc) from None
        if target not in MANUAL_TARGETS:
            manual = ", ".join(s for s in SessionStatus.values if s in MANUAL_TARGETS)
            hint = "; use session_terminate" if target == SessionStatus.TERMINATED else ""
            raise fail(f"{target} is not a manual target; expected one of {manual}{hint}")
        session = get_session(options["session_id"])
        with service_errors():
            session = session_transition(
                session, target, actor=self.actor, reason=options["reason"], expected_status=expected
            )
        if options["json"]:
            self.write_json(session_data(session))
        else:
            self.stdout.write(f"Session {session_summary(session)}")
