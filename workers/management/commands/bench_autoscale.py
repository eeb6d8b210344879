"""`manage.py bench_autoscale --trace FILE`: replay a day of bookings through the autoscaler (SPEC §6.3)."""

from django.conf import settings

from lcm.management.command_utils import LcmCommand
from lcm.tools.bench.autoscale import DEFAULT_TRACE, AutoscaleBench


class Command(LcmCommand):
    help = "Replay a booking trace through the autoscaler on a simulated clock; on-time rate and worker-hours vs ideal."

    def add_arguments(self, parser):
        parser.add_argument(
            "--trace", help=f"Booking trace CSV (default {DEFAULT_TRACE.relative_to(settings.BASE_DIR)})."
        )
        parser.add_argument("--generate", metavar="FILE", help="Write a synthetic day trace to FILE and replay it.")
        parser.add_argument("--sessions", type=int, default=400, help="Bookings of a generated trace.")
        parser.add_argument("--seed", type=int, default=7, help="Seed of a generated trace.")
        parser.add_argument(
            "--template",
            help="Worker template (name) of the fleet (default: what the autoscaler launches for the largest booking).",
        )
        parser.add_argument("--placement-lead", type=int, default=None, help="Minutes (default: SystemSettings).")
        parser.add_argument("--boot-lead", type=int, default=None, help="Minutes (default: SystemSettings).")
        parser.add_argument("--scale-up-cooldown", type=int, default=None, help="Minutes (default: SystemSettings).")
        parser.add_argument("--scale-down-cooldown", type=int, default=None, help="Minutes (default: SystemSettings).")
        parser.add_argument("--max-workers", type=int, default=1000, help="Per region (default 1000: uncapped).")
        parser.add_argument("--instantiate-minutes", type=float, default=2.0)
        parser.add_argument("--teardown-minutes", type=float, default=1.0)
        parser.add_argument("--stop-minutes", type=float, default=2.0)
        parser.add_argument("--tick-seconds", type=float, default=60.0)
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        AutoscaleBench(self).run(options)
