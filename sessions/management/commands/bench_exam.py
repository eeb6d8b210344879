"""`manage.py bench_exam`: an exam of N candidates beside N single bookings; the rig is `lcm.tools.bench.exam`."""

from lcm.management.command_utils import LcmCommand
from lcm.tools.bench.exam import ExamBench


class Command(LcmCommand):
    help = (
        "Benchmark exam booking: exam_book of N candidates (capacity check included) beside N single bookings "
        "through session_create, with sessions already booked over the day. Removes every row it creates."
    )

    def add_arguments(self, parser):
        parser.add_argument("--candidates", type=int, default=500, help="Candidates in the exam (default 500).")
        parser.add_argument("--booked", type=int, default=2000, help="Sessions booked before (default 2000).")
        parser.add_argument("--workers", type=int, default=40, help="RUNNING workers of 96 CPU (default 40).")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        ExamBench(self).run(options)
