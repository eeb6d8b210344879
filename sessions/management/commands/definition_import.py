"""`manage.py definition_import`: create a lablet definition from a CML topology file."""

import argparse
from pathlib import Path

from lcm.management.command_utils import LcmCommand, read_text_file, service_errors
from sessions.api.serializers import MAX_LAB_YAML
from sessions.definitions import definition_create
from sessions.management.command_utils import definition_data

# Options that map straight onto definition fields; left out when not given so the service's defaults apply.
_FIELD_OPTIONS = {
    "version": "version",
    "cpu": "cpu_cores",
    "memory": "memory_gb",
    "storage": "storage_gb",
    "license_affinity": "license_affinity",
    "max_duration": "max_duration_minutes",
    "form_qualified_name": "form_qualified_name",
    "grading": "grading_enabled",
    "grading_mode": "grading_mode",
    "pass_percent": "pass_percent",
    "hold_for_review_hours": "hold_for_review_hours",
    "description": "description",
}


class Command(LcmCommand):
    help = "Import a CML topology (YAML or JSON) as a new lablet definition (or a new version of a name)."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # `--version` here is the definition's version; it replaces Django's program-version flag.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("file", help="The topology file.")
        parser.add_argument("--name", required=True, help="Definition name.")
        parser.add_argument("--version", help="Semantic version (default 1.0.0).")
        # Numbers stay text here so the service reports a bad value by its field name.
        parser.add_argument("--cpu", help="CPU cores a session needs on its worker.")
        parser.add_argument("--memory", help="Memory (GB) a session needs.")
        parser.add_argument("--storage", help="Storage (GB) a session needs.")
        parser.add_argument("--license-affinity", help="Comma list of PERSONAL, ENTERPRISE, EVALUATION (empty = any).")
        parser.add_argument("--max-duration", help="Longest timeslot, in minutes (default 60).")
        parser.add_argument("--form-qualified-name", help="LDS/Grading content id.")
        parser.add_argument(
            "--grading", action=argparse.BooleanOptionalAction, default=None, help="Grade sessions when they finish."
        )
        parser.add_argument("--grading-mode", choices=["auto", "manual", "none"], help="How sessions are graded.")
        parser.add_argument("--pass-percent", help="Pass mark (%%) when the Grading Engine sends no cut score.")
        parser.add_argument("--hold-for-review-hours", help="Keep the stopped lab this long after grading.")
        parser.add_argument("--description", help="Free text.")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        path = Path(options["file"])
        lab_yaml = read_text_file(path, MAX_LAB_YAML)  # the REST import's limit; a bound, since /dev/zero never ends
        fields = {field: options[option] for option, field in _FIELD_OPTIONS.items() if options[option] is not None}
        with service_errors():
            definition = definition_create(
                actor=self.actor,
                name=options["name"],
                lab_yaml=lab_yaml,
                lab_artifact_uri=str(path.resolve()),
                **fields,
            )
        if options["json"]:
            self.write_json(definition_data(definition))
            return
        ports = ", ".join(definition.port_names) or "none"
        self.stdout.write(
            f"Imported definition {definition.name} {definition.version} ({definition.pk}) {definition.status}: "
            f"{definition.node_count} nodes, ports: {ports}"
        )
