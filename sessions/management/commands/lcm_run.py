"""`manage.py lcm_run [--port 8000]`: the embedded all-in-one.

Migrates, seeds demo data when the database is empty, then serves the site and admin.
(Control loops and simulators join this process as they are built.)
"""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from sessions.seed import database_is_empty, ensure_users, seed_demo


class Command(BaseCommand):
    help = "Run LCM on its embedded default: migrate, seed demo data when empty, serve web + admin."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--no-serve", action="store_true", help="prepare the database and exit")

    def handle(self, *args, **options):
        port = options["port"]
        if not 1 <= port <= 65535:
            raise CommandError(f"--port {port} is not a TCP port")
        call_command("migrate", interactive=False, verbosity=0)
        if database_is_empty():
            seed_demo()
            self.stdout.write("Seeded demo data.")
        else:
            ensure_users()
        if not settings.DEBUG:
            call_command("collectstatic", interactive=False, verbosity=0)
        url = f"http://{options['host']}:{port}"
        self.stdout.write(f"LCM is starting at {url}/")
        self.stdout.write(f"Log in at {url}/accounts/login/ (demo users: admin and instructor; see README)")
        self.stdout.write(f"Admin at {url}/admin/")
        if options["no_serve"]:
            return
        call_command("runserver", f"{options['host']}:{port}", use_reloader=False, use_threading=True)
