"""The FSM helper shared by every state machine.

Each model declares its state machine once, in its `states.py`: `machine()` takes one row per
status (its badge colour and the statuses it may move to) and derives the choice set, the
`{source: {targets}}` transition table and the colour map from it. `transitions_from_table` turns
the table into django-fsm-2 transition methods named `to_<target>`. Services call
`apply_transition`, which refuses anything the table does not allow with `InvalidTransition`
(HTTP 409, command exit 1, a page message), and `record_change`/`record_changes` write the
history row of every status change, whichever app's.
"""

import copy
import sys
from collections import defaultdict
from typing import NamedTuple

from django.db import models
from django_fsm import can_proceed, transition

from lcm import live, metrics
from lcm.middleware import current_request_id


class InvalidTransition(Exception):
    """A transition the state machine refuses; carries what callers need to explain it."""

    code = "invalid_transition"

    def __init__(self, entity: str, current: str, target: str, allowed: list[str], detail: str | None = None):
        self.entity = entity
        self.current = current
        self.target = target
        self.allowed = allowed
        self.detail = detail or (
            f"{entity} cannot go from {current} to {target}; allowed: {', '.join(allowed) or 'none'}"
        )
        super().__init__(self.detail)


class Machine(NamedTuple):
    """A state machine's statuses (a `TextChoices`), transition table and badge colours (unpack it)."""

    choices: type[models.TextChoices]
    transitions: dict[str, set[str]]
    colours: dict[str, str]


def machine(name: str, table: str) -> Machine:
    """Build a `Machine` from a text table, one line per status: `STATUS colour -> TARGET TARGET ...`.

    Read like the SPEC's tables: the status, its badge colour, then the statuses it may move to
    (none after the arrow: a final status). The lines' order is the choices' order. A malformed line
    or a target that is not a status is a typo, refused at import.
    """
    rows: dict[str, tuple[str, list[str]]] = {}
    for line in filter(None, (raw.strip() for raw in table.splitlines())):
        head, arrow, tail = line.partition("->")
        words = head.split()
        if not arrow or len(words) != 2:
            raise ValueError(f"{name}: expected `STATUS colour -> TARGETS`, got {line!r}")
        rows[words[0]] = (words[1], tail.split())
    for status, (_colour, targets) in rows.items():
        unknown = set(targets) - set(rows)
        if unknown:
            raise ValueError(f"{name}: {status} moves to unknown status {sorted(unknown)}")
    module = sys._getframe(1).f_globals.get("__name__")  # the states module, as for a class statement
    choices = models.TextChoices(name, list(rows), module=module)
    return Machine(
        choices=choices,
        transitions={choices[status]: {choices[t] for t in targets} for status, (_c, targets) in rows.items()},
        colours={choices[status]: colour for status, (colour, _t) in rows.items()},
    )


def method_name(target: str) -> str:
    """Name of the transition method that leads to `target`."""
    return f"to_{target.lower()}"


def transitions_from_table(field, table: dict[str, set[str]]) -> dict:
    """Build one django-fsm transition method per target from a `{source: {targets}}` table.

    The methods do no I/O: side effects belong to the service that calls them.
    """
    sources_by_target: dict[str, list[str]] = defaultdict(list)
    for source, targets in table.items():
        for target in targets:
            sources_by_target[target].append(source)

    methods = {}
    for target, sources in sources_by_target.items():

        def _transition(self):
            """Move the status; declared from the state table."""

        _transition.__name__ = method_name(target)
        methods[_transition.__name__] = transition(field=field, source=sorted(sources), target=target)(_transition)
    return methods


def allowed_targets(table: dict[str, set[str]], current: str) -> list[str]:
    """Targets the table allows from `current`, sorted."""
    return sorted(table.get(current, set()))


def apply_transition(instance, table: dict[str, set[str]], target: str, *, entity: str, field: str = "status") -> str:
    """Run the FSM transition of `instance` to `target` in memory; returns the previous status.

    The caller holds the row lock and saves; refused moves raise `InvalidTransition`.
    """
    current = getattr(instance, field)
    method = getattr(instance, method_name(target), None)
    if method is None or target not in table.get(current, set()) or not can_proceed(method):
        raise InvalidTransition(entity, current, target, allowed_targets(table, current))
    method()
    return current


def snapshot(instance) -> dict:
    """The instance's concrete field values (containers copied), to find what a step changed (`changed_fields`)."""
    values = {}
    for field in instance._meta.concrete_fields:
        if not field.primary_key:
            value = getattr(instance, field.attname)
            values[field.name] = copy.deepcopy(value) if isinstance(value, dict | list) else value
    return values


def changed_fields(instance, before: dict) -> list[str]:
    """Names of the fields whose value differs from `before`, plus `updated_at` when the model has it:
    what `save(update_fields=...)` writes, so an UPDATE carries the change and not the whole row."""
    names = [name for name, old in before.items() if getattr(instance, instance._meta.get_field(name).attname) != old]
    if "updated_at" in before and "updated_at" not in names:
        names.append("updated_at")
    return names


def normalize_status(value, choices) -> str:
    """Accept a status case-insensitively; raise ValueError naming the valid values otherwise."""
    text = str(value or "").strip().upper()
    valid = [c for c in choices.values]
    if text not in valid:
        raise ValueError(f"unknown status {value!r}; expected one of {', '.join(valid)}")
    return text


def actor_name(actor) -> str:
    """The history `actor` for a Django user, or a loop/command name passed as a string."""
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor
    return actor.get_username() or "anonymous"


def _history_row(history, request_id: str, *, actor, from_status="", reason="", **fields):
    return history(
        **fields,
        from_status=from_status or "",
        actor=actor_name(actor),
        reason=reason or "",
        request_id=request_id,
    )


def record_changes(history, changes) -> list:
    """Append rows to a status history table in one INSERT: the one writer of every history row.

    `history` is the table's model (a `lcm.models.StatusChange`, e.g. `SessionStatusChange`); each
    change is a dict of its row's fields: the changed object's key (`session_id`, `worker_id`),
    what changed (`entity`, `field`), `from_status`, `to_status`, `actor` (a user or a loop/command
    name, see `actor_name`) and `reason`. A missing `from_status` or `reason` is blank, and each row
    carries the id of the request (or task) being handled. Call it inside the transaction that made
    the changes. Each status move is counted (`lcm_transitions_total`) once that transaction commits.
    """
    changes = list(
        changes
    )  # read thrice: the rows, the metrics and the live pages' scopes (a caller may pass a generator)
    request_id = current_request_id()
    request_id = "" if request_id == "-" else request_id
    rows = [_history_row(history, request_id, **change) for change in changes]
    if not rows:
        return []
    metrics.count_transitions(
        (history.entity_of(change), change.get("from_status") or "", change["to_status"]) for change in changes
    )
    # A bulk INSERT sends no post_save: mark the live pages of the changed sessions (and every list) changed.
    live.bump(f"session:{change['session_id']}" for change in changes if change.get("session_id"))
    return history.objects.bulk_create(rows)


def record_change(history, **fields):
    """Append one row to a status history table (written by `record_changes`); returns the row."""
    return record_changes(history, [fields])[0]
