"""`manage.py worker_list`: the CML workers with status, capacity in use and licence, as a table or a JSON array."""

from lcm.fsm import normalize_status
from lcm.management.command_utils import LcmCommand, fail, iso, printable
from scheduling.selectors import worker_capacities
from workers.models import CMLWorker
from workers.states import WorkerStatus

COLUMNS = ("NAME", "STATUS", "DESIRED", "REGION", "INSTANCE", "CPU", "MEMORY", "SESSIONS", "LICENCE", "ID")


def worker_data(worker: CMLWorker, capacity=None) -> dict:
    """A worker as the REST API names it (SPEC §5.1); `usage` from `worker_capacities` when given."""
    usage = None
    if capacity is not None:
        usage = {
            "cpu_cores": capacity.cpu_used,
            "memory_gb": capacity.memory_used,
            "storage_gb": capacity.storage_used,
            "nodes": capacity.nodes_used,
            "ports": capacity.ports_used,
            "sessions": capacity.sessions,
        }
    return {
        "id": str(worker.pk),
        "name": worker.name,
        "template_id": str(worker.template_id) if worker.template_id else None,
        "template_name": worker.template.name if worker.template_id else None,
        "region": worker.region,
        "aws_instance_id": worker.aws_instance_id,
        "instance_type": worker.instance_type,
        "public_ip": worker.public_ip,
        "private_ip": worker.private_ip,
        "cml_base_url": worker.cml_base_url or None,
        "cml_version": worker.cml_version,
        "license_type": worker.license_type,
        "license_status": worker.license_status,
        "license_error": worker.license_error,
        "capacity": {
            "cpu_cores": worker.cpu_cores,
            "memory_gb": worker.memory_gb,
            "storage_gb": worker.storage_gb,
            "max_nodes": worker.max_nodes,
        },
        "usage": usage,
        "port_range_start": worker.port_range_start,
        "port_range_end": worker.port_range_end,
        "status": worker.status,
        "desired_status": worker.desired_status,
        "service_status": worker.service_status,
        "metrics": {
            "cpu_percent": worker.cpu_percent,
            "memory_percent": worker.memory_percent,
            "running_nodes": worker.running_nodes,
            "collected_at": iso(worker.metrics_collected_at),
        },
        "last_activity_at": iso(worker.last_activity_at),
        "drain_started_at": iso(worker.drain_started_at),
        "drain_deadline": iso(worker.drain_deadline),
        "last_error": worker.last_error,
        "created_by": worker.created_by,
        "created_at": iso(worker.created_at),
        "updated_at": iso(worker.updated_at),
    }


class Command(LcmCommand):
    help = "List CML workers by name, with status, capacity in use and licence."

    def add_arguments(self, parser):
        parser.add_argument("--status", help="Status, or a comma list of statuses (any case).")
        parser.add_argument("--region", help="Only workers of this region.")
        parser.add_argument("--all", action="store_true", help="Include TERMINATED workers.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        rows = CMLWorker.objects.select_related("template").order_by("name")
        if options["status"]:
            try:
                statuses = [normalize_status(s, WorkerStatus) for s in options["status"].split(",") if s.strip()]
            except ValueError as exc:
                raise fail(exc) from None
            rows = rows.filter(status__in=statuses)
        elif not options["all"]:
            rows = rows.exclude(status=WorkerStatus.TERMINATED)
        if options["region"]:
            rows = rows.filter(region=options["region"].strip())
        workers = list(rows)
        capacities = worker_capacities([w.pk for w in workers]) if workers else {}
        if options["json"]:
            self.write_json([worker_data(w, capacities.get(str(w.pk))) for w in workers])
            return
        if not workers:
            self.stdout.write("No workers.")
            return
        table = [COLUMNS]
        for w in workers:
            c = capacities[str(w.pk)]
            table.append(
                (
                    w.name,
                    w.status,
                    w.desired_status,
                    w.region,
                    w.aws_instance_id or "-",
                    f"{c.cpu_used}/{c.cpu_total}",
                    f"{c.memory_used}/{c.memory_total}",
                    str(c.sessions),
                    w.license_status,
                    str(w.pk),
                )
            )
        # Cells are escaped before measuring, so a control character in a name cannot shift the columns.
        table = [tuple(map(printable, row)) for row in table]
        widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
        for row in table:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
