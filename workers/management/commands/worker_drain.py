"""`manage.py worker_drain WORKER`: stop placing sessions on a worker; it stops once empty (or cancel the drain)."""

from lcm.management.command_utils import LcmCommand, fail, int_option, is_uuid, iso, service_errors
from scheduling.selectors import worker_capacities
from workers.management.commands.worker_list import worker_data
from workers.models import CMLWorker
from workers.services import worker_cancel_drain, worker_drain

MAX_DRAIN_MINUTES = 525_600  # a year: beyond any maintenance window, far from a date overflow


def get_worker(reference: str) -> CMLWorker:
    """A worker by id or name; a `CommandError` otherwise."""
    reference = str(reference or "").strip()
    rows = CMLWorker.objects.select_related("template")
    worker = rows.filter(pk=reference).first() if is_uuid(reference) else rows.filter(name=reference).first()
    if worker is None:
        raise fail(f"no worker with id or name {reference!r}")
    return worker


class Command(LcmCommand):
    help = (
        "Drain a worker: it takes no new sessions and stops once its sessions are done; at the drain deadline the "
        "remaining sessions expire and are torn down. --cancel returns a draining worker to RUNNING."
    )

    def add_arguments(self, parser):
        parser.add_argument("worker", help="Worker id or name.")
        parser.add_argument("--cancel", action="store_true", help="Cancel the drain (DRAINING → RUNNING).")
        parser.add_argument(
            "--timeout-minutes",
            type=int_option(0, MAX_DRAIN_MINUTES),
            help="Minutes until the deadline (default: SystemSettings drain timeout).",
        )
        parser.add_argument("--reason", default="", help="Recorded in the worker's history.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        worker = get_worker(options["worker"])
        timeout = options["timeout_minutes"]
        with service_errors():
            if options["cancel"]:
                worker = worker_cancel_drain(worker, actor=self.actor, reason=options["reason"])
            else:
                worker = worker_drain(worker, actor=self.actor, reason=options["reason"], timeout_minutes=timeout)
        worker = get_worker(str(worker.pk))
        if options["json"]:
            self.write_json(worker_data(worker, worker_capacities([worker.pk])[str(worker.pk)]))
            return
        if options["cancel"]:
            self.stdout.write(f"{worker.name} {worker.status}: drain cancelled")
        else:
            self.stdout.write(f"{worker.name} {worker.status} until empty; deadline {iso(worker.drain_deadline)}")
