"""`manage.py bench_autoscale`: LCM's autoscaler beside a static and a reactive scaler on booking traces (SPEC §10)."""

from lcm.management.command_utils import LcmCommand
from lcm.tools.bench.autoscale import AutoscaleBench


class Command(LcmCommand):
    help = (
        "Replay booking traces (default: workers/traces/day.csv and exam_day.csv) on a simulated clock for each "
        "template and a mixed fleet: LCM beside a static fleet sized for the peak and a reactive 80/20 scaler; "
        "on-time rates, worker-hours, ratio to the ideal capacity curve and cost."
    )

    def add_arguments(self, parser):
        parser.add_argument("--trace", action="append", help="Booking trace CSV (repeatable; default both shipped).")
        parser.add_argument("--generate", metavar="FILE", help="Write a synthetic day trace to FILE and replay it.")
        parser.add_argument("--generate-exam", metavar="FILE", help="Write an exam-day trace to FILE and replay it.")
        parser.add_argument("--sessions", type=int, default=400, help="Bookings of a generated day trace.")
        parser.add_argument("--seed", type=int, default=7, help="Seed of a generated trace.")
        parser.add_argument("--template", help="Only this worker template (name); default each, and mixed.")
        parser.add_argument("--placement-lead", type=int, default=None, help="Minutes (default: SystemSettings).")
        parser.add_argument("--boot-lead", type=int, default=None, help="Minutes (default: SystemSettings).")
        parser.add_argument("--scale-up-cooldown", type=int, default=None, help="Reactive peer, minutes (5).")
        parser.add_argument("--scale-down-cooldown", type=int, default=None, help="Reactive peer, minutes (15).")
        parser.add_argument("--max-workers", type=int, default=1000, help="Per region (default 1000: uncapped).")
        parser.add_argument("--instantiate-minutes", type=float, default=2.0)
        parser.add_argument("--teardown-minutes", type=float, default=1.0)
        parser.add_argument("--stop-minutes", type=float, default=2.0)
        parser.add_argument("--tick-seconds", type=float, default=60.0)
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        AutoscaleBench(self).run(options)
