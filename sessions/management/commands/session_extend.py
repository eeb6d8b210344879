"""`manage.py session_extend`: more time for a session (SPEC §3.4a) through the service; the candidate gets it in
LDS on the reconciler's next pass."""

from datetime import timedelta

from django.utils.dateparse import parse_datetime

from lcm.management.command_utils import LcmCommand, fail, service_errors
from sessions.booking import session_extend
from sessions.management.command_utils import get_session, session_data, session_summary


class Command(LcmCommand):
    help = (
        "Extend a session's timeslot (PENDING … RUNNING): to a new end, or by some minutes. A command acts as an "
        "admin: beyond the instructors' limit it needs --reason."
    )

    def add_arguments(self, parser):
        parser.add_argument("session_id", help="The session id (UUID).")
        when = parser.add_mutually_exclusive_group(required=True)
        when.add_argument("--to", help="The new end, ISO 8601 with a time zone (e.g. 2026-12-05T10:30:00Z).")
        when.add_argument("--minutes", type=int, help="Minutes to add to the current end (1–1440).")
        parser.add_argument("--reason", default="", help="Why (recorded in the history).")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        session = get_session(options["session_id"])
        if options["minutes"] is not None:
            if not 1 <= options["minutes"] <= 1440:
                raise fail("--minutes must be between 1 and 1440")
            new_end = session.timeslot_end + timedelta(minutes=options["minutes"])
        else:
            new_end = parse_datetime(options["to"]) if options["to"] else None
            if new_end is None or new_end.tzinfo is None:
                raise fail(f"--to must be an ISO 8601 date-time with a time zone, not {options['to']!r}")
        with service_errors():
            session = session_extend(session, new_end, actor=self.actor, reason=options["reason"], is_admin=True)
        if options["json"]:
            self.write_json(session_data(session))
        else:
            self.stdout.write(f"Session {session_summary(session)} now ends {session.timeslot_end:%Y-%m-%dT%H:%M:%SZ}")
