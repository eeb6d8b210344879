"""What the session, definition and grading commands share: finding a session or definition from a
command-line reference, and the JSON shapes they print (SPEC §5.1 names). The generic command
plumbing (errors, `--json`, UUIDs, times) is `lcm.management.command_utils`."""

import uuid
from datetime import datetime
from decimal import Decimal

from lcm.management.command_utils import fail, is_uuid, iso, parse_uuid, printable
from lcm.versions import version_key
from sessions.api.serializers import SessionSerializer
from sessions.api.views import session_rows
from sessions.models import Exam, LabletDefinition, LabletSession
from sessions.states import DefinitionStatus


def get_session(value) -> LabletSession:
    """The session with id `value`; malformed or unknown ids are a `CommandError`."""
    pk = parse_uuid(value, "session id")
    try:
        return LabletSession.objects.select_related("definition", "worker").get(pk=pk)
    except LabletSession.DoesNotExist:
        raise fail(f"no session with id {pk}") from None


def get_exam(value) -> Exam:
    """The exam with id `value`, or a `CommandError`."""
    try:
        return Exam.objects.get(pk=int(str(value).strip()))
    except (ValueError, Exam.DoesNotExist):
        raise fail(f"no exam with id {value!r}") from None


def resolve_definition(reference: str) -> LabletDefinition:
    """A definition by id or `name[:version]`.

    A bare name means its newest ACTIVE version, or its newest version when none is
    active (so a caller can explain that it is not active).
    """
    reference = str(reference or "").strip()
    if is_uuid(reference):
        try:
            return LabletDefinition.objects.get(pk=uuid.UUID(reference))
        except LabletDefinition.DoesNotExist:
            raise fail(f"no definition with id {reference}") from None
    name, _, version = reference.partition(":")
    name, version = name.strip(), version.strip()
    candidates = list(LabletDefinition.objects.filter(name=name))
    if not name or not candidates:
        raise fail(f"no definition named {name!r}")
    if version:
        for definition in candidates:
            if definition.version == version:
                return definition
        known = ", ".join(sorted((d.version for d in candidates), key=version_key))
        raise fail(f"definition {name!r} has no version {version} (versions: {known})")
    active = [d for d in candidates if d.status == DefinitionStatus.ACTIVE]
    return max(active or candidates, key=lambda d: version_key(d.version))


# ---------------------------------------------------------------------------------------
# JSON shapes (SPEC §5.1 names)
# ---------------------------------------------------------------------------------------


def sessions_data(sessions) -> list[dict]:
    """Sessions as the API shows them (`SessionSerializer`, with `definition_name` and `worker_name`)."""
    rows = session_rows().in_bulk([session.pk for session in sessions])
    return [dict(SessionSerializer(rows[session.pk]).data) for session in sessions]


def session_data(session: LabletSession) -> dict:
    """A session as the API shows it."""
    return sessions_data([session])[0]


def _plain(value):
    """A model field's value as JSON names it: ids as text, instants in ISO 8601, decimals as numbers."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def fields_data(obj, names: str, *, blank_as_null: str = "") -> dict:
    """`{name: value}` of the space-separated field `names`; those in `blank_as_null` give null when blank."""
    nullable = set(blank_as_null.split())
    data = {}
    for name in names.split():
        value = getattr(obj, name)
        data[name] = None if name in nullable and not value else _plain(value)
    return data


DEFINITION_FIELDS = (
    "id name version status description lab_artifact_uri lab_yaml_hash resource_requirements node_count "
    "node_definitions_required port_template license_affinity cml_version_min cml_version_max "
    "max_duration_minutes boot_lead_minutes form_qualified_name grading_enabled grading_mode pass_percent "
    "hold_for_review_hours lab_reuse_enabled created_by "
    "created_at updated_at"
)


def definition_data(definition: LabletDefinition) -> dict:
    """A definition as the API names it (without the topology text itself)."""
    return fields_data(definition, DEFINITION_FIELDS)


def history_data(change) -> dict:
    return fields_data(
        change, "entity from_status to_status at actor reason request_id", blank_as_null="from_status request_id"
    )


def user_session_data(user_session) -> dict:
    return fields_data(
        user_session, "id status lds_session_id lds_part_id login_url devices error_message created_at updated_at"
    )


def grading_session_data(grading) -> dict:
    return fields_data(
        grading, "id status grading_session_id grading_part_id pod_id error_message created_at updated_at"
    )


def score_report_data(report) -> dict:
    data = fields_data(report, "id grading_session_id score max_score cut_score passed manual submitted_at created_at")
    sections = [fields_data(section, "name score max_score weight passed") for section in report.sections.all()]
    return {**data, "sections": sections}


def session_summary(session: LabletSession) -> str:
    """One human line: id, status, owner, definition and timeslot (control characters escaped, newlines too)."""
    definition = session.definition
    return printable(
        f"{session.pk} {session.status} owner={session.owner} "
        f"definition={definition.name} {session.definition_version} "
        f"timeslot={iso(session.timeslot_start)}..{iso(session.timeslot_end)}"
    )
