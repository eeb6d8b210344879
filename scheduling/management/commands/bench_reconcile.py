"""`manage.py bench_reconcile`: the lablet loop's tick and passes, and watch latency (SPEC §6.3).

The rig is `lcm.tools.bench.reconcile`.
"""

from lcm.management.command_utils import LcmCommand
from lcm.tools.bench.reconcile import ReconcileBench


class Command(LcmCommand):
    help = (
        "Benchmark the lablet loop: queries and µs per tick and per session (idle and changed) at two "
        "population sizes, and etcd change → reconcile start latency beside the polling interval."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sessions", type=int, default=10_000, help="Sessions in the large run (10000).")
        parser.add_argument("--small", type=int, default=1000, help="Sessions in the small run (1000).")
        parser.add_argument("--repeat", type=int, default=20, help="Timed ticks per size (20).")
        parser.add_argument("--passes", type=int, default=300, help="Idle sessions given a timed pass (300).")
        parser.add_argument("--samples", type=int, default=300, help="etcd changes timed (300).")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        ReconcileBench(self).run(options)
