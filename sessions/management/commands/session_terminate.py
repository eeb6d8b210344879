"""`manage.py session_terminate`: terminate a session from any non-terminal state; teardown follows."""

from lcm.management.command_utils import LcmCommand, service_errors
from sessions.management.command_utils import get_session, session_data, session_summary
from sessions.services import session_terminate


class Command(LcmCommand):
    help = "Terminate a lablet session (its lab, LDS session and ports are cleaned up afterwards)."

    def add_arguments(self, parser):
        parser.add_argument("session_id", help="The session id (UUID).")
        parser.add_argument("--reason", default="", help="Reason recorded in the history.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        session = get_session(options["session_id"])
        with service_errors():
            session = session_terminate(session, actor=self.actor, reason=options["reason"])
        if options["json"]:
            self.write_json(session_data(session))
        else:
            self.stdout.write(f"Terminated session {session_summary(session)}")
