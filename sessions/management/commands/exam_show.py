"""`manage.py exam_show`: one exam, its sessions counted by status and its roster (SPEC §8)."""

from lcm.management.command_utils import LcmCommand, int_option, iso, printable
from sessions.exams import exam_counts, exam_roster
from sessions.management.command_utils import get_exam


class Command(LcmCommand):
    help = "Show one exam: counts by status and each session (owner, status, time left, score)."

    def add_arguments(self, parser):
        parser.add_argument("exam_id", type=int_option(1, 2**62), help="The exam id.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        exam = get_exam(options["exam_id"])
        counts = {status: n for status, n in exam_counts(exam).items() if n}
        roster = exam_roster(exam)
        if options["json"]:
            self.write_json(
                {
                    "id": exam.pk,
                    "name": exam.name,
                    "definition_id": exam.definition_id,
                    "timeslot_start": iso(exam.timeslot_start),
                    "timeslot_end": iso(exam.timeslot_end),
                    "notes": exam.notes,
                    "created_by": exam.created_by,
                    "counts": counts,
                    "sessions": [{**row, "id": str(row["id"])} for row in roster],
                }  # fmt: skip
            )
            return
        self.stdout.write(printable(f"Exam {exam.pk} {exam.name!r} ({exam.definition_id})"))
        self.stdout.write(f"Timeslot: {iso(exam.timeslot_start)} to {iso(exam.timeslot_end)}")
        self.stdout.write("Counts: " + (", ".join(f"{s}={n}" for s, n in counts.items()) or "no sessions"))
        for row in roster:
            left = f"{row['time_left_seconds'] // 60} min left" if row["time_left_seconds"] is not None else "-"
            score = f"{row['score']}/{row['max_score']}" if row["score"] is not None else "-"
            self.stdout.write(printable(f"{row['id']}  {row['status']:<13} {left:<12} {score:<12} {row['owner']}"))
