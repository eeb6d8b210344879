"""`manage.py session_create`: book a lablet session (SPEC §3.1) through `sessions.services.session_create`."""

from lcm.management.command_utils import LcmCommand, fail, service_errors
from sessions.booking import session_create
from sessions.management.command_utils import resolve_definition, session_data, session_summary


class Command(LcmCommand):
    help = "Book a lablet session; it starts PENDING. No --start means as soon as possible."

    def add_arguments(self, parser):
        parser.add_argument("--definition", required=True, help="Definition id, or name[:version].")
        parser.add_argument("--owner", required=True, help="The candidate the session is for.")
        parser.add_argument("--start", help="Timeslot start, ISO 8601 with a timezone (default: now).")
        parser.add_argument("--end", help="Timeslot end, ISO 8601 (default: start + the definition's maximum).")
        parser.add_argument("--reservation-id", help="External reservation id (unique).")
        parser.add_argument("--reason", default="", help="Reason recorded in the history.")
        parser.add_argument("--warn", action="store_true", help="Book even when the fleet cannot hold it (SPEC §10).")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        definition = resolve_definition(options["definition"])
        with service_errors():
            try:
                session = session_create(
                    definition=definition,
                    owner=options["owner"],
                    actor=self.actor,
                    timeslot_start=options["start"],
                    timeslot_end=options["end"],
                    reservation_id=options["reservation_id"],
                    reason=options["reason"],
                    on_capacity="warn" if options["warn"] else None,
                )
            except OverflowError:
                # The service adds the definition's maximum to a start at the end of the calendar, before any write.
                raise fail("timeslot_start: too late: the timeslot would end after the year 9999") from None
        if options["json"]:
            self.write_json(session_data(session))
        else:
            self.stdout.write(f"Created session {session_summary(session)}")
            verdict = session.capacity_verdict
            for reason in verdict.reasons if verdict is not None and not verdict.fits else ():
                self.stdout.write(f"warning: {reason}")
