"""`manage.py bench_api`: latency of the session list and detail endpoints (SPEC §6.3); rig: `lcm.tools.bench.api`."""

from lcm.management.command_utils import LcmCommand
from lcm.tools.bench.api import ApiBench


class Command(LcmCommand):
    help = (
        "Benchmark the session list (page of 50) and detail endpoints with N sessions in the database, beside "
        "a minimal view running the same SQL; prints p50/p95 and queries per request. Writes nothing that lasts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sessions", type=int, default=10_000, help="Sessions to insert (default 10000).")
        parser.add_argument("--requests", type=int, default=200, help="Timed requests per endpoint (default 200).")
        parser.add_argument("--page-size", type=int, default=50, help="List page size (default 50).")
        parser.add_argument("--seed", type=int, default=1, help="Random seed for pages and ids.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        ApiBench(self).run(options)
