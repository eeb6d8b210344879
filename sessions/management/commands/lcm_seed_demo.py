"""`manage.py lcm_seed_demo [--json]`: create the demo data that is missing (idempotent)."""

import json

from lcm.errors import first_error_line
from lcm.management.command_utils import LcmCommand, fail
from sessions.seed import seed_demo


class Command(LcmCommand):
    """Text output and the error line escape control characters (stored values may hold them; issue 18)."""

    help = "Seed demo data (templates, an ACTIVE definition, three RUNNING workers, users, sessions); idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print what was created as JSON")

    def handle(self, *args, **options):
        try:
            created = seed_demo()
        except Exception as exc:  # one line on stderr, exit 1: the transaction rolled back
            raise fail(f"seeding failed: {first_error_line(exc)}") from None
        if options["json"]:
            self.stdout.write(json.dumps(created))
            return
        for kind, names in created.items():
            self.stdout.write(f"{kind}: {len(names)} created")
