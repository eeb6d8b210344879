"""What LCM's `manage.py` commands share: the error contract, `--json`, UUIDs and times (SPEC §5.6). The
session commands' lookups and JSON shapes are `sessions.management.command_utils`.

Every error a command meets becomes one `CommandError` with a one-line message, so Django
prints exactly one line on stderr and exits 1; the command changes nothing in that case
(the services it calls are atomic and raise before writing). `--json` prints one JSON
document on stdout and nothing else there (logging goes to stderr). Text output and error
messages show control characters as their Python escapes, so stored text cannot drive the terminal.
"""

import argparse
import json
import sys
import unicodedata
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.db.utils import OperationalError, ProgrammingError

from lcm.errors import Conflict, InvalidTransition, ValidationError, first_error_line


def one_line(text) -> str:
    """Collapse any whitespace run (newlines included) so a message stays on one line."""
    return " ".join(str(text).split())


def printable(text, *, keep_newlines: bool = False) -> str:
    """`text` with every control character (escape codes, bell, newline, ...) written as its Python escape;
    `keep_newlines` leaves the line breaks of a multi-line message."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) == "Cc" and not (keep_newlines and char == "\n")
        else char
        for char in str(text)
    )


def fail(message) -> CommandError:
    """A `CommandError` whose message is one printable line; `raise fail(...)`."""
    return CommandError(printable(one_line(message)))


def int_option(minimum: int, maximum: int):
    """An argparse `type` for a whole number in [minimum, maximum]: out of range is a usage error (one line, exit 1)
    instead of an overflow deep in a service or the database."""

    def parse(text: str) -> int:
        value = int(text)  # a ValueError is argparse's "invalid int value: ..."
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must not be negative, got {value}" if minimum == 0 else f"must be at least {minimum}, got {value}"
            )
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def read_text_file(path: Path, max_chars: int) -> str:
    """The UTF-8 text of `path`, reading at most `max_chars` + 1 characters (`/dev/zero` is endless); a
    `CommandError` when it is unreadable, not UTF-8 or longer than `max_chars`."""
    try:
        with path.open(encoding="utf-8") as file:
            text = file.read(max_chars + 1)
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise fail(f"cannot read {path}: not UTF-8 text") from None
    if len(text) > max_chars:
        raise fail(f"cannot read {path}: larger than {max_chars} characters")
    return text


class PrintableOutput(OutputWrapper):
    """A command's stdout that escapes every control character but the line breaks, whatever the command writes.

    Values a line is made of are escaped where the line is built (`printable`), newlines too, so a stored
    value cannot forge a line either. JSON passes unchanged: `json.dumps` escapes control characters itself.
    """

    def write(self, msg="", style_func=None, ending=None):
        super().write(printable(msg, keep_newlines=True), style_func, ending)


@contextmanager
def service_errors():
    """Turn the errors services raise on bad input into a one-line `CommandError`."""
    try:
        yield
    except (ValidationError, Conflict, InvalidTransition) as exc:
        raise fail(first_error_line(exc)) from None


class LcmCommand(BaseCommand):
    """Base of LCM's data commands: `--json`, the history actor and one-line usage errors."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        if parser.called_from_command_line:
            # argparse prints the usage block and exits 2; the contract is one line and exit 1.
            def error(message):
                parser.exit(1, f"CommandError: {printable(one_line(message))} (see --help)\n")

            parser.error = error
        return parser

    def __init__(self, stdout=None, *args, **kwargs):
        super().__init__(stdout, *args, **kwargs)
        self.stdout = PrintableOutput(stdout or sys.stdout)

    def execute(self, *args, **options):
        if options.get("stdout"):  # call_command(..., stdout=...): Django would wrap it in a plain OutputWrapper
            self.stdout = PrintableOutput(options.pop("stdout"))
        try:
            return super().execute(*args, **options)
        except (OperationalError, ProgrammingError) as exc:
            raise _database_error(exc) from None

    def add_json_argument(self, parser):
        parser.add_argument("--json", action="store_true", help="Print JSON on stdout instead of text.")

    @property
    def actor(self) -> str:
        """The history `actor` of changes made by this command, e.g. `command:session_create`."""
        return f"command:{self.__module__.rsplit('.', 1)[-1]}"

    def write_json(self, data) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=_json_default))


# SQLSTATEs of a schema the migrations have not made yet: undefined table, undefined column.
_NOT_MIGRATED = {"42P01", "42703"}


def _database_error(exc: Exception) -> Exception:
    """A database that is not there, not reachable or not migrated, as one line (the wrong DATABASE_URL or a
    missing `migrate` is the user's to fix, not a traceback); any other SQL error is re-raised as it is."""
    text = one_line(str(exc))
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    if isinstance(exc, ProgrammingError) and sqlstate not in _NOT_MIGRATED:
        return exc
    if sqlstate in _NOT_MIGRATED or "no such table" in text or "no such column" in text:
        return CommandError(f"the database is not migrated (run manage.py migrate): {text}")
    return CommandError(f"cannot use the database (check DATABASE_URL): {text}")


def _json_default(value):
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------------
# Parsing and lookups
# ---------------------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, or None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_uuid(value, what: str = "id") -> uuid.UUID:
    """A UUID from text, or a `CommandError` naming what was expected."""
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise fail(f"{value!r} is not a valid {what} (expected a UUID)") from None


def is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value).strip())
    except ValueError:
        return False
    return True
