"""`manage.py exam_action`: start | extend | finish | terminate every session of an exam (SPEC §8)."""

from lcm.management.command_utils import LcmCommand, int_option, printable, service_errors
from sessions.exams import EXAM_ACTIONS, MAX_EXTEND_MINUTES, exam_action
from sessions.management.command_utils import get_exam


class Command(LcmCommand):
    help = "Run one action on every session of an exam; sessions it does not apply to are refused and unchanged."

    def add_arguments(self, parser):
        parser.add_argument("exam_id", type=int_option(1, 2**62), help="The exam id.")
        parser.add_argument("action", choices=EXAM_ACTIONS, help="What to do to every session.")
        parser.add_argument("--minutes", type=int_option(1, MAX_EXTEND_MINUTES), help="For extend: minutes to add.")
        parser.add_argument("--reason", default="", help="Reason recorded in each session's history.")
        parser.add_argument("--admin", action="store_true", help="Extend beyond the instructors' ceiling (a reason).")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        exam = get_exam(options["exam_id"])
        with service_errors():
            results = exam_action(
                exam, options["action"], actor=self.actor, minutes=options["minutes"], reason=options["reason"],
                is_admin=options["admin"],
            )  # fmt: skip
        ok = sum(r.result == "ok" for r in results)
        if options["json"]:
            self.write_json(
                {"results": [r.as_dict() for r in results], "counts": {"ok": ok, "refused": len(results) - ok}}
            )
            return
        self.stdout.write(f"{options['action']}: {ok} ok, {len(results) - ok} refused")
        for r in results:
            if r.result == "refused":
                self.stdout.write(printable(f"refused {r.session_id} {r.owner}: {r.detail}"))
