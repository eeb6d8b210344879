"""`manage.py lcm_watch`: turn each etcd key change into an immediate reconcile (SPEC §1, §4).

Beat ticks stay the safety net: if this process or etcd is down, nothing is lost, only slower.
"""

import re
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from lcm import coordination, loops
from sessions.reconcilers import wake

SESSION_KEY = re.compile(r"^/lcm/sessions/([0-9a-f-]{36})/status$")
WORKER_KEY = re.compile(r"^/lcm/workers/([0-9a-f-]{36})/(desired|actual)$")


def on_change(kind: str, key: str, value: str | None) -> None:
    """Route one key change: a session whose new status calls for a pass is reconciled now, a new
    PENDING one gets a placement tick now, a worker's desired/actual change is reconciled now.

    A session status the reconciler would only wait in (READY, RUNNING: until the timeslot ends)
    or that the pass making it carries on from itself (INSTANTIATING) wakes nobody: that pass
    would find nothing to do. The ticks still cover every status.
    """
    if kind != "put":
        return
    if match := SESSION_KEY.match(key):
        wake(match.group(1), value)
    elif (match := WORKER_KEY.match(key)) and "workers" in loops.LOOPS:
        loops.enqueue("workers", match.group(1))


class Command(BaseCommand):
    help = "Watch etcd and enqueue a reconcile for every session or worker whose projected state changes."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="connect, report, and exit (a health check)")

    def handle(self, *args, **options):
        if not settings.LCM_ETCD_ENDPOINTS:
            raise CommandError("lcm_watch needs LCM_ETCD_ENDPOINTS (the embedded default reacts in-process)")
        coord = coordination.coordinator()
        if not coord.healthy():
            if options["once"]:
                raise CommandError(f"etcd at {settings.LCM_ETCD_ENDPOINTS} is not reachable")
            self.stderr.write(f"etcd at {settings.LCM_ETCD_ENDPOINTS} is not reachable yet; retrying")
        if options["once"]:
            self.stdout.write(f"etcd at {settings.LCM_ETCD_ENDPOINTS} is reachable")
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())

        cancel = None
        self.stdout.write(f"watching {coordination.PREFIX}/ on {settings.LCM_ETCD_ENDPOINTS}")
        while not stop.is_set():
            if cancel is None:
                try:
                    cancel = coord.watch_prefix(f"{coordination.PREFIX}/", on_change)
                except Exception as exc:  # etcd down: try again shortly
                    self.stderr.write(f"watch failed ({exc.__class__.__name__}); retrying in 2 s")
                    time.sleep(2)
                    continue
            if not coord.healthy():
                cancel()
                cancel = None
            stop.wait(2)
        if cancel is not None:
            cancel()
