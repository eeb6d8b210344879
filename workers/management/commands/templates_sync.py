"""`manage.py templates_sync`: overwrite the worker templates in the database from the YAML file."""

from django.conf import settings

from lcm.management.command_utils import LcmCommand, fail, service_errors
from workers.template_services import templates_seed


class Command(LcmCommand):
    help = (
        "Create and overwrite worker templates from the templates YAML file "
        "(unlike the create-only seeding on migrate, edits made in the database are reset)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--file", help="Templates file (default: LCM_WORKER_TEMPLATES_FILE).")
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        path = options["file"] or settings.LCM_WORKER_TEMPLATES_FILE
        try:
            with service_errors():
                result = templates_seed(path, overwrite=True)
        except UnicodeDecodeError:
            # The service reports unreadable files but lets a binary file's decode error through.
            raise fail(f"file: cannot read {path}: not UTF-8 text") from None
        if options["json"]:
            self.write_json({"file": str(path), **result})
            return
        for key in ("created", "updated", "unchanged"):
            names = result[key]
            self.stdout.write(f"{key}: {len(names)}" + (f" ({', '.join(names)})" if names else ""))
