"""`manage.py bench_placement`: placement speed and packing (SPEC §6.3); the rig is `lcm.tools.bench.placement`."""

from lcm.management.command_utils import LcmCommand
from lcm.tools.bench.placement import PlacementBench


class Command(LcmCommand):
    help = (
        "Benchmark placement: decisions/s in memory, workers used against the lower bound (all at once and "
        "with sessions arriving and leaving) and committed placements/s in PostgreSQL, beside naive first "
        "fit, spreading and per-session commits. Removes every row it creates."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sessions", type=int, default=10_000, help="Sessions to place (default 10000).")
        parser.add_argument("--workers", type=int, default=500, help="Workers in the fleet (default 500).")
        parser.add_argument("--hours", type=float, default=8.0, help="Length of the arrival timeline (default 8).")
        parser.add_argument("--tick", type=int, default=500, help="Sessions per scheduler tick (default 500).")
        parser.add_argument(
            "--peer-sessions", type=int, default=1000, help="Sessions committed one by one for the peer (1000)."
        )
        parser.add_argument("--seed", type=int, default=1, help="Random seed of the fleet and bookings.")
        parser.add_argument("--memory-only", action="store_true", help="Skip the PostgreSQL part.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        PlacementBench(self).run(options)
