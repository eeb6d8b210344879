"""`manage.py exam_book`: book an exam's roster in one step (SPEC §8) through `sessions.exams.exam_book`."""

from pathlib import Path

from lcm.management.command_utils import LcmCommand, fail, iso, read_text_file, service_errors
from sessions.exams import MAX_ROSTER_CHARS, exam_book, parse_roster
from sessions.management.command_utils import resolve_definition


class Command(LcmCommand):
    help = (
        "Book an exam: one session per roster row, all or none. The roster is CSV with a header "
        "owner[,reservation_id] (or one owner per line). A roster the fleet cannot hold is refused unless --warn."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="The exam's name.")
        parser.add_argument("--definition", required=True, help="Definition id, or name[:version].")
        parser.add_argument("--start", required=True, help="Timeslot start, ISO 8601 with a timezone.")
        parser.add_argument("--end", help="Timeslot end, ISO 8601 (default: start + the definition's maximum).")
        parser.add_argument("--roster", required=True, help="The roster file (CSV).")
        parser.add_argument("--notes", default="", help="Notes kept with the exam.")
        parser.add_argument("--warn", action="store_true", help="Book even when the fleet cannot hold it.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        definition = resolve_definition(options["definition"])
        candidates, errors = parse_roster(read_text_file(Path(options["roster"]), MAX_ROSTER_CHARS))
        if errors:
            first = sorted(errors, key=_row_order)[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise fail(f"{options['roster']}: {errors[first][0]}{more}")
        with service_errors():
            try:
                booking = exam_book(
                    name=options["name"], definition=definition, timeslot_start=options["start"],
                    timeslot_end=options["end"], candidates=candidates, actor=self.actor,
                    on_capacity="warn" if options["warn"] else None, notes=options["notes"],
                )  # fmt: skip
            except OverflowError:
                raise fail("timeslot_start: too late: the timeslot would end after the year 9999") from None
        exam, verdict = booking.exam, booking.verdict
        if options["json"]:
            self.write_json(
                {
                    "exam": {
                        "id": exam.pk,
                        "name": exam.name,
                        "definition_id": exam.definition_id,
                        "timeslot_start": iso(exam.timeslot_start),
                        "timeslot_end": iso(exam.timeslot_end),
                    },
                    "session_ids": [str(s.pk) for s in booking.sessions],
                    "capacity": verdict.as_dict() if verdict else None,
                }  # fmt: skip
            )
            return
        self.stdout.write(
            f"Booked exam {exam.pk} {exam.name!r}: {len(booking.sessions)} sessions, "
            f"{iso(exam.timeslot_start)} to {iso(exam.timeslot_end)}"
        )
        if verdict is not None and not verdict.fits:
            for reason in verdict.reasons:
                self.stdout.write(f"warning: {reason}")


def _row_order(key: str) -> tuple:
    """Errors in roster order: `candidates[3].owner` before `candidates[10].owner`; others first."""
    if key.startswith("candidates["):
        return (1, int(key[len("candidates[") : key.index("]")]), key)
    return (0, 0, key)
