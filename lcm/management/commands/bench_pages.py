"""`manage.py bench_pages`: N open live pages polling 1/s against gunicorn, stamp poll beside the digest poll;
rig: `lcm.tools.bench.pages`."""

import os

from lcm.management.command_utils import LcmCommand, fail
from lcm.tools.bench.pages import PagesBench


class Command(LcmCommand):
    help = (
        "Benchmark live pages: N open pages (dashboard, session detail, exam roster) polling every second against "
        "the production web process (gunicorn, 2 workers) with 1,000 sessions; prints polls/s served, p50/p95 and "
        "web CPU per poll for today's render-and-digest poll beside the change-stamp poll. Deletes its fixtures."
    )

    def add_arguments(self, parser):
        parser.add_argument("--pages", type=int, default=100, help="Open pages (default 100).")
        parser.add_argument("--sessions", type=int, default=1000, help="Sessions in the database (default 1000).")
        parser.add_argument("--exam-size", type=int, default=100, help="Sessions on the exam's roster (default 100).")
        parser.add_argument("--seconds", type=float, default=20.0, help="Measured seconds per mode (default 20).")
        parser.add_argument("--warmup", type=float, default=3.0, help="Seconds polled before measuring (default 3).")
        parser.add_argument(
            "--redis-db",
            type=int,
            default=int(os.environ.get("LCM_TEST_REDIS_DB", "13")),
            help="Redis DB number for the web process's broker (flushed; default 13).",
        )
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        for name in ("pages", "sessions", "seconds"):
            if options[name] <= 0:
                raise fail(f"--{name.replace('_', '-')} must be positive")
        PagesBench(self).run(options)
