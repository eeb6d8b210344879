"""`manage.py worker_add`: a new worker from a template (the worker reconciler launches its EC2 instance), or an
existing CML endpoint registered by URL (the reconciler's readiness gate makes it RUNNING)."""

import uuid

from lcm.management.command_utils import LcmCommand, fail, int_option, is_uuid, service_errors
from scheduling.selectors import worker_capacities
from workers.api.serializers import MAX_CAPACITY
from workers.management.commands.worker_list import worker_data
from workers.models import WorkerTemplate
from workers.services import worker_create
from workers.states import LicenseType, WorkerStatus


def get_template(reference: str) -> WorkerTemplate:
    """An enabled template by name or id; a `CommandError` otherwise."""
    reference = str(reference or "").strip()
    template = WorkerTemplate.objects.filter(name=reference).first()
    if template is None and is_uuid(reference):
        template = WorkerTemplate.objects.filter(pk=uuid.UUID(reference)).first()
    if template is None:
        known = ", ".join(WorkerTemplate.objects.filter(enabled=True).values_list("name", flat=True)) or "none"
        raise fail(f"no worker template named {reference!r} (enabled: {known})")
    if not template.enabled:
        raise fail(f"worker template {template.name} is disabled")
    return template


def declared_fields(options) -> dict:
    """The capacity, region and licence given on the command line (the template's apply to the rest)."""
    fields = {}
    for option in ("cpu_cores", "memory_gb", "storage_gb", "max_nodes"):
        if options[option] is not None:
            fields[option] = options[option]
    if options["region"]:
        fields["region"] = options["region"].strip()
    if options["license_type"]:
        licence = options["license_type"].strip().upper()
        if licence not in LicenseType.values:
            raise fail(f"--license-type must be one of {', '.join(LicenseType.values)}")
        fields["license_type"] = licence
    return fields


class Command(LcmCommand):
    help = (
        "Add a CML worker: --template launches a new EC2 instance from it; --cml-url registers an existing CML "
        "(which becomes RUNNING once its system_information says ready)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--template", help="Template name or id (capacity, instance type, AMI, licence).")
        parser.add_argument("--name", help="Worker name (default: <template>-<random>).")
        parser.add_argument("--cml-url", help="Base URL of an existing CML (before /api/v0) to register.")
        parser.add_argument("--region", help="Region (default: the template's).")
        parser.add_argument("--license-type", help="PERSONAL, ENTERPRISE or EVALUATION (default: the template's).")
        for name in ("cpu-cores", "memory-gb", "storage-gb", "max-nodes"):
            parser.add_argument(
                f"--{name}", type=int_option(0, MAX_CAPACITY), help="Declared capacity (default: the template's)."
            )
        parser.add_argument("--reason", default="", help="Recorded in the worker's history.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        template = get_template(options["template"]) if options["template"] else None
        url = (options["cml_url"] or "").strip().rstrip("/")
        if template is None and not url:
            raise fail("give --template (launch a new worker) or --cml-url (register an existing CML)")
        if url and not url.startswith(("http://", "https://")):
            raise fail(f"--cml-url {url!r} must be an http(s) URL")
        if url and not options["name"]:
            raise fail("--name is required with --cml-url")
        name = options["name"] or f"{template.name}-{uuid.uuid4().hex[:8]}"
        fields = declared_fields(options)
        if url:
            fields["cml_base_url"] = url
        status = WorkerStatus.STARTING if url else WorkerStatus.PENDING
        reason = options["reason"] or ("registered existing CML" if url else f"added from template {template.name}")
        with service_errors():
            worker = worker_create(
                name=name, actor=self.actor, template=template, status=status, reason=reason, **fields
            )
        if options["json"]:
            self.write_json(worker_data(worker, worker_capacities([worker.pk])[str(worker.pk)]))
            return
        what = f"registered {url}" if url else f"from template {template.name}; the worker loop launches it"
        self.stdout.write(f"{worker.pk} {worker.name} {worker.status} ({what})")
