"""`manage.py session_show`: one session with its history, user session, grading session and score report."""

from lcm.management.command_utils import LcmCommand, fail, parse_uuid, printable
from sessions.management.command_utils import (
    grading_session_data,
    history_data,
    score_report_data,
    session_data,
    user_session_data,
)
from sessions.models import LabletSession
from sessions.selectors import session_detail


def _newest(rows):
    """The newest of prefetched child rows (the current one), or None."""
    return max(rows, key=lambda row: row.created_at, default=None)


class Command(LcmCommand):
    help = "Show one lablet session: fields, status history and its children."

    def add_arguments(self, parser):
        parser.add_argument("session_id", help="The session id (UUID).")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        pk = parse_uuid(options["session_id"], "session id")
        try:
            session = session_detail(pk)
        except LabletSession.DoesNotExist:
            raise fail(f"no session with id {pk}") from None
        user_session = _newest(session.user_sessions.all())
        grading = _newest(session.grading_sessions.all())
        report = _newest(session.score_reports.all())
        data = session_data(session) | {
            "history": [history_data(change) for change in session.history.all()],
            "user_session": user_session_data(user_session) if user_session else None,
            "grading_session": grading_session_data(grading) if grading else None,
            "score_report": score_report_data(report) if report else None,
        }
        if options["json"]:
            self.write_json(data)
            return
        self._write_text(data)

    def _write_line(self, line):
        # One line each: a newline or escape code inside a value (owner, reason, error) is escaped.
        self.stdout.write(printable(line))

    def _write_text(self, data):
        write = self._write_line
        write(f"Session {data['id']}")
        skip = {"id", "history", "user_session", "grading_session", "score_report"}
        for key, value in data.items():
            if key not in skip:
                write(f"  {key}: {'-' if value in (None, '', {}, []) else value}")
        write("History:")
        for change in data["history"]:
            line = f"  {change['at']}  {change['entity']}  {change['from_status'] or '-'} -> {change['to_status']}"
            line += f"  by {change['actor']}"
            if change["reason"]:
                line += f"  ({change['reason']})"
            write(line)
        for title, key in (
            ("User session", "user_session"),
            ("Grading session", "grading_session"),
            ("Score report", "score_report"),
        ):
            child = data[key]
            if child is None:
                continue
            write(f"{title}:")
            for name, value in child.items():
                if name == "sections":
                    for section in value:
                        write(f"  section {section['name']}: {section['score']}/{section['max_score']}")
                else:
                    write(f"  {name}: {'-' if value in (None, '', [], {}) else value}")
