"""`manage.py token_create <username>`: a new API token for a user; the key is printed once and never again."""

from django.contrib.auth import get_user_model

from lcm.api.tokens import MAX_EXPIRY_DAYS, token_create
from lcm.management.command_utils import LcmCommand, fail, iso, service_errors


class Command(LcmCommand):
    help = "Create an API token for a user and print its key (shown only this once; only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username", help="The user the token authenticates as.")
        parser.add_argument("--name", default="", help="What the token is for (shown in the admin).")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help=f"Days until it expires (1–{MAX_EXPIRY_DAYS}; default never).",
        )
        self.add_json_argument(parser)

    def handle(self, *args, **options):
        username = options["username"]
        user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
        if user is None:
            raise fail(f"no user named {username!r}")
        with service_errors():
            created = token_create(user, actor=self.actor, name=options["name"], expires_days=options["expires_days"])
        token = created.token
        if options["json"]:
            self.write_json(
                {
                    "id": token.pk,
                    "user": user.get_username(),
                    "name": token.name,
                    "key": created.key,
                    "key_prefix": token.key_prefix,
                    "created_at": iso(token.created_at),
                    "expires_at": iso(token.expires_at),
                }
            )
            return
        expiry = f"expires {iso(token.expires_at)}" if token.expires_at else "never expires"
        self.stdout.write(
            f"API token {token.name or token.key_prefix!r} for {user.get_username()} ({expiry}). "
            "Store the key now, it is not shown again:"
        )
        self.stdout.write(created.key)
