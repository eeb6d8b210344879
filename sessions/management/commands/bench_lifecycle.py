"""`manage.py bench_lifecycle --sessions N [--rate R]`: full lifecycles through the real processes (SPEC §6.3).

The rig is `lcm.tools.bench.lifecycle` (the stack driving in `lcm.tools.bench.rig`).
"""

from django.core.management.base import BaseCommand

from lcm.tools.bench.lifecycle import LifecycleBench


class Command(BaseCommand):
    help = (
        "Benchmark full session lifecycles through the real worker/beat/watcher processes against zero-delay "
        "simulators; every figure beside its peers measured in the same run: metrics off, evidence off (SPEC §9: its "
        "cost per session) and ticks only (no watcher)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sessions", type=int, default=100, help="sessions to run (default 100)")
        parser.add_argument("--rate", type=float, help="book this many sessions per second instead of a burst")
        parser.add_argument(
            "--hold",
            action="store_true",
            help="with --rate: candidates start only once every session is READY (instantiation load only)",
        )
        parser.add_argument("--workers", type=int, default=10, help="simulated CML workers (default 10)")
        parser.add_argument(
            "--interval", type=float, help="loop tick interval in seconds (default: LCM_LOOP_LABLETS_SECONDS)"
        )
        parser.add_argument("--pool", choices=["threads", "prefork"], default="prefork", help="Celery worker pool")
        parser.add_argument("--concurrency", type=int, default=4, help="Celery worker concurrency (default 4)")
        parser.add_argument("--redis-db", type=int, default=14, help="Redis database number for the broker")
        parser.add_argument("--timeout", type=float, help="seconds each run may take (default: 120 + N/2)")
        parser.add_argument("--no-peer", action="store_true", help="skip the ticks-only peer run")
        parser.add_argument(
            "--no-evidence-peer",
            action="store_true",
            help="skip the run without evidence (SPEC §9) that gives evidence's cost per session",
        )
        parser.add_argument("--no-metrics-peer", action="store_true", help="skip the metrics-off peer run")
        parser.add_argument(
            "--warmup", type=int, default=0, help="sessions of an unmeasured first run (a first run is slower)"
        )
        parser.add_argument(
            "--metrics-rounds",
            type=int,
            default=1,
            help="rounds of metrics on/off runs, mirrored (on off | off on ...) so drift cancels (default 1)",
        )
        parser.add_argument(
            "--scrape-interval", type=float, default=5.0, help="seconds between scrapes of /metrics (default 5)"
        )
        parser.add_argument("--in-place", action="store_true", help="use the current (test) database")
        parser.add_argument("--keep-db", action="store_true", help="keep the scratch database afterwards")
        parser.add_argument("--json", action="store_true", help="print the figures as JSON")

    def handle(self, *args, **options):
        LifecycleBench(self).run(options)
