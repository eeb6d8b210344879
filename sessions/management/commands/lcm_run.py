"""`manage.py lcm_run [--port 8000]`: the embedded all-in-one (SPEC §1).

Migrates, seeds demo data when the database is empty, starts the simulators (CML, LDS,
Grading Engine, moto) and the control loops in this process, then serves the site, admin,
REST API and webhook. Sessions move by themselves; manual transitions finish them.
DEBUG only: with DJANGO_DEBUG=0 it refuses (demo users), production runs the launcher.
"""

import socket
import time

import requests
from django.conf import settings
from django.core.management import call_command

from lcm.loops import InProcessLoops
from lcm.management.command_utils import LcmCommand, fail
from sessions.seed import DEMO_REFUSED, database_is_empty, ensure_users, seed_demo
from simulators.runner import SimulatorStartError, start_simulators
from workers.models import CMLWorker


class Command(LcmCommand):
    """Its lines and errors escape control characters (`--host`, stored names; issue 18)."""

    help = "Run LCM on its embedded default: migrate, seed when empty, simulators + loops + web in one process."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--no-serve", action="store_true", help="prepare the database and exit")
        parser.add_argument("--no-simulators", action="store_true", help="use the configured real endpoints")
        parser.add_argument("--no-loops", action="store_true", help="serve pages only; nothing moves by itself")

    def handle(self, *args, **options):
        if not settings.DEMO_DATA_ALLOWED:
            raise fail(f"lcm_run refuses to start: {DEMO_REFUSED}")
        port = options["port"]
        if not 1 <= port <= 65535:
            raise fail(f"--port {port} is not a TCP port")
        if not options["no_serve"]:
            # Before anything is touched: on a clash this process would read another instance's simulators.
            self._check_ports_free(options["host"], port, simulators=not options["no_simulators"])
        call_command("migrate", interactive=False, verbosity=0)
        if database_is_empty():
            # Nothing is reconciled while seeding (the in-process pool is held back): the simulators are not up
            # yet, and a worker synced now would log "CML unreachable". The loops' first ticks pick the work up.
            pool, settings.LCM_INPROCESS_WORKERS = settings.LCM_INPROCESS_WORKERS, 0
            try:
                seed_demo()
            finally:
                settings.LCM_INPROCESS_WORKERS = pool
            self.stdout.write("Seeded demo data.")
        else:
            ensure_users()
        url = f"http://{options['host']}:{port}"
        if options["no_serve"]:
            self._banner(url)
            return
        if not options["no_simulators"]:
            self._start_simulators(url)
        loops = None
        if not options["no_loops"]:
            loops = InProcessLoops().start()
            self.stdout.write("Control loops running in-process (placement, lablets).")
        self._banner(url)
        # People get the friendly error pages, not Django's technical ones (URL list, settings, source code);
        # runserver still serves the static files itself. The demo data stays allowed (DEMO_DATA_ALLOWED).
        settings.DEBUG = False
        try:
            call_command(
                "runserver", f"{options['host']}:{port}", use_reloader=False, use_threading=True, insecure_serving=True
            )
        finally:
            if loops is not None:
                loops.stop()  # let the passes in flight finish their writes before the process ends

    def _check_ports_free(self, host: str, port: int, *, simulators: bool) -> None:
        wanted = [(port, "the web server (--port)")]
        if simulators:
            wanted += [
                (settings.LCM_SIM_CML_PORT, "the CML simulator (LCM_SIM_CML_PORT)"),
                (settings.LCM_SIM_LDS_PORT, "the LDS simulator (LCM_SIM_LDS_PORT)"),
                (settings.LCM_SIM_GRADING_PORT, "the Grading Engine simulator (LCM_SIM_GRADING_PORT)"),
                (settings.LCM_SIM_MOTO_PORT, "the EC2 simulator (LCM_SIM_MOTO_PORT)"),
                (settings.LCM_SIM_OIDC_PORT, "the OpenID Connect simulator (LCM_SIM_OIDC_PORT)"),
            ]
        for number, what in wanted:
            bind_host = host if number == port else settings.LCM_SIM_HOST
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is free
                try:
                    probe.bind((bind_host, number))
                except OSError:
                    raise fail(
                        f"port {number} on {bind_host} for {what} is in use (another LCM running?); stop it or choose "
                        "other ports"
                    ) from None

    def _banner(self, url):
        self.stdout.write(f"LCM is starting at {url}/")
        self.stdout.write(f"Log in at {url}/accounts/login/ (demo users: admin and instructor; see README)")
        self.stdout.write(f"Admin at {url}/admin/")

    def _wait_healthy(self, urls: dict[str, str], timeout: float = 20.0) -> None:
        """Wait until every simulator answers HTTP (any status), so the loops never start against a closed port."""
        deadline = time.monotonic() + timeout
        for name, base in urls.items():
            while True:
                try:
                    requests.get(base, timeout=1)
                    break
                except requests.RequestException:
                    if time.monotonic() > deadline:
                        raise fail(f"the {name} simulator at {base} did not answer within {timeout:.0f}s") from None
                    time.sleep(0.1)

    def _start_simulators(self, url):
        """Serve the simulators on their configured ports and give every simulator-backed worker its virtual CML."""
        try:
            handle = start_simulators(
                settings.LCM_SIM_HOST,
                cml_port=settings.LCM_SIM_CML_PORT,
                lds_port=settings.LCM_SIM_LDS_PORT,
                grading_port=settings.LCM_SIM_GRADING_PORT,
                moto_port=settings.LCM_SIM_MOTO_PORT,
                oidc_port=settings.LCM_SIM_OIDC_PORT,
                zero_delay=settings.LCM_SIM_ZERO_DELAY,
                webhook_url=f"{url}/api/events",
                webhook_secret=settings.WEBHOOK_SECRET,
                control_token=settings.LCM_SIM_TOKEN or None,
            )
        except SimulatorStartError as exc:
            raise fail(f"simulators could not start: {exc} (or pass --no-simulators)") from None
        if not settings.LCM_AWS_ENDPOINT_URL and "moto" in handle.urls:
            # EC2 calls (fleet loops, discovery) go to the moto simulator, never to real AWS.
            settings.LCM_AWS_ENDPOINT_URL = handle.urls["moto"]
        self._wait_healthy(handle.urls)
        cml_url = handle.urls["cml"]
        prefix = f"{settings.LCM_CML_SIMULATOR_URL.rstrip('/')}/w/"
        for worker in CMLWorker.objects.filter(cml_base_url__startswith=prefix):
            name = worker.cml_base_url[len(prefix) :].strip("/")
            # Demo workers are already RUNNING: their virtual CML is ready at once (no warm-up).
            requests.post(
                f"{cml_url}/_sim/workers",
                json={"name": name, "warmup": 0},
                headers={"X-Sim-Token": handle.token},
                timeout=5,
            ).raise_for_status()
        self.stdout.write("Simulators: " + ", ".join(f"{k} {v}" for k, v in handle.urls.items()))
        if not settings.LCM_SIM_TOKEN:
            self.stdout.write(f"Simulator control API (/_sim/...): header X-Sim-Token: {handle.token}")
