"""`manage.py lcm_watch`: turn each etcd key change into an immediate reconcile (SPEC §1, §4).

Beat ticks stay the safety net: if this process or etcd is down, nothing is lost, only slower.
"""

import logging
import re
import signal
import threading

from django.conf import settings

from lcm import coordination, loops
from lcm.management.command_utils import LcmCommand, fail, printable
from sessions.reconcilers import wake

logger = logging.getLogger("lcm.watch")

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


class Watcher:
    """Keeps one watch on the coordination prefix alive (SPEC §4): it watches again when the stream broke or
    etcd came back, with a fresh client, and says so once per outage (not once per retry). After an outage
    it kicks the ticks, which pick up whatever changed while nobody was watching."""

    def __init__(self, coord, write=print):
        self.coord = coord
        self.write = write
        self.watch = None
        self.down = False

    def step(self) -> None:
        """One check: drop a watch that broke (or whose etcd stopped answering), then watch if none runs."""
        if self.watch is not None and (self.watch.broken or not self.coord.healthy()):
            self.watch()
            self.watch = None
            self._went_down("the watch stream broke")
        if self.watch is None:
            if not self.coord.healthy():  # a watch started on an etcd that does not answer would never deliver
                self._went_down("etcd does not answer")
                return
            try:
                self.watch = self.coord.watch_prefix(f"{coordination.PREFIX}/", on_change)
            except Exception as exc:  # etcd down: the next step tries again with a fresh client
                self._went_down(f"watch failed ({exc.__class__.__name__})")
                return
            if self.down:
                self.down = False
                self.write("watching again; the ticks pick up what changed meanwhile")
                for loop in ("placement", "lablets", "workers"):
                    if loop in loops.LOOPS:
                        loops.kick(loop)

    def _went_down(self, why: str) -> None:
        if not self.down:
            self.down = True
            self.write(f"{why}; retrying every {RETRY_SECONDS:.0f} s until etcd answers (the ticks carry on)")

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()
            stop.wait(RETRY_SECONDS)
        if self.watch is not None:
            self.watch()


RETRY_SECONDS = 2.0


class Command(LcmCommand):
    """Its output escapes control characters (the endpoints are configuration a person typed; issue 18)."""

    help = "Watch etcd and enqueue a reconcile for every session or worker whose projected state changes."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="connect, report, and exit (a health check)")

    def handle(self, *args, **options):
        if not settings.LCM_ETCD_ENDPOINTS:
            raise fail("lcm_watch needs LCM_ETCD_ENDPOINTS (the embedded default reacts in-process)")
        try:
            coord = coordination.coordinator()
            healthy = coord.healthy()
        except ValueError as exc:  # an endpoint that is not a URL
            raise fail(f"LCM_ETCD_ENDPOINTS {settings.LCM_ETCD_ENDPOINTS} is not usable: {exc}") from None
        if not healthy:
            if options["once"]:
                raise fail(f"etcd at {settings.LCM_ETCD_ENDPOINTS} is not reachable")
            self.stderr.write(printable(f"etcd at {settings.LCM_ETCD_ENDPOINTS} is not reachable yet; retrying"))
        if options["once"]:
            self.stdout.write(f"etcd at {settings.LCM_ETCD_ENDPOINTS} is reachable")
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        self.stdout.write(f"watching {coordination.PREFIX}/ on {settings.LCM_ETCD_ENDPOINTS}")
        Watcher(coord, write=logger.warning).run(stop)
