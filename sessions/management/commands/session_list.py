"""`manage.py session_list`: sessions filtered like the REST list, as a table or a JSON array."""

from lcm.fsm import normalize_status
from lcm.management.command_utils import LcmCommand, fail, int_option, is_uuid, iso, printable
from sessions.management.command_utils import sessions_data
from sessions.selectors import session_list
from sessions.states import SessionStatus

COLUMNS = ("ID", "STATUS", "OWNER", "DEFINITION", "START", "END", "WORKER")
MAX_LIMIT = 1_000_000


class Command(LcmCommand):
    help = "List lablet sessions, soonest timeslot first."

    def add_arguments(self, parser):
        parser.add_argument("--status", help="Status, or a comma list of statuses (any case).")
        parser.add_argument("--owner", help="Only this candidate's sessions.")
        parser.add_argument("--definition", help="Definition id, or name[:version].")
        parser.add_argument("--worker", help="Worker id or name.")
        parser.add_argument("--limit", type=int_option(1, MAX_LIMIT), help="At most this many sessions.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        statuses = None
        if options["status"]:
            try:
                statuses = [normalize_status(s, SessionStatus) for s in options["status"].split(",") if s.strip()]
            except ValueError as exc:
                raise fail(exc) from None
        limit = options["limit"]

        definition, worker = options["definition"], options["worker"]
        rows = session_list(
            statuses=statuses,
            owner=options["owner"],
            definition=definition if definition and is_uuid(definition) else None,
            worker=worker if worker and is_uuid(worker) else None,
        )
        if definition and not is_uuid(definition):
            name, _, version = definition.partition(":")
            rows = rows.filter(definition__name=name.strip())
            if version.strip():
                rows = rows.filter(definition__version=version.strip())
        if worker and not is_uuid(worker):
            rows = rows.filter(worker__name=worker.strip())
        sessions = list(rows[:limit] if limit else rows)

        if options["json"]:
            self.write_json(sessions_data(sessions))
            return
        if not sessions:
            self.stdout.write("No sessions.")
            return
        rows = [
            (
                str(s.pk),
                s.status,
                s.owner,
                f"{s.definition.name} {s.definition_version}",
                iso(s.timeslot_start),
                iso(s.timeslot_end),
                s.worker.name if s.worker else "-",
            )
            for s in sessions
        ]
        # Cells are escaped before measuring, so a control character cannot shift the columns.
        table = [COLUMNS] + [tuple(map(printable, row)) for row in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
        for row in table:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
