"""What the session, definition and grading commands share: finding a session or definition from a
command-line reference, and the JSON shapes they print (SPEC §5.1 names). The generic command
plumbing (errors, `--json`, UUIDs, times) is `lcm.management.command_utils`."""

import uuid

from lcm.management.command_utils import fail, is_uuid, iso, parse_uuid
from lcm.versions import version_key
from sessions.api.serializers import SessionSerializer
from sessions.api.views import session_rows
from sessions.models import LabletDefinition, LabletSession
from sessions.states import DefinitionStatus


def get_session(value) -> LabletSession:
    """The session with id `value`; malformed or unknown ids are a `CommandError`."""
    pk = parse_uuid(value, "session id")
    try:
        return LabletSession.objects.select_related("definition", "worker").get(pk=pk)
    except LabletSession.DoesNotExist:
        raise fail(f"no session with id {pk}") from None


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


def definition_data(definition: LabletDefinition) -> dict:
    """A definition as the API names it (without the topology text itself)."""
    return {
        "id": str(definition.pk),
        "name": definition.name,
        "version": definition.version,
        "status": definition.status,
        "description": definition.description,
        "lab_artifact_uri": definition.lab_artifact_uri,
        "lab_yaml_hash": definition.lab_yaml_hash,
        "resource_requirements": definition.resource_requirements,
        "node_count": definition.node_count,
        "node_definitions_required": definition.node_definitions_required,
        "port_template": definition.port_template,
        "license_affinity": definition.license_affinity,
        "cml_version_min": definition.cml_version_min,
        "cml_version_max": definition.cml_version_max,
        "max_duration_minutes": definition.max_duration_minutes,
        "boot_lead_minutes": definition.boot_lead_minutes,
        "form_qualified_name": definition.form_qualified_name,
        "grading_enabled": definition.grading_enabled,
        "lab_reuse_enabled": definition.lab_reuse_enabled,
        "created_by": definition.created_by,
        "created_at": iso(definition.created_at),
        "updated_at": iso(definition.updated_at),
    }


def history_data(change) -> dict:
    return {
        "entity": change.entity,
        "from_status": change.from_status or None,
        "to_status": change.to_status,
        "at": iso(change.at),
        "actor": change.actor,
        "reason": change.reason,
        "request_id": change.request_id or None,
    }


def user_session_data(user_session) -> dict:
    return {
        "id": str(user_session.pk),
        "status": user_session.status,
        "lds_session_id": user_session.lds_session_id,
        "lds_part_id": user_session.lds_part_id,
        "login_url": user_session.login_url,
        "devices": user_session.devices,
        "error_message": user_session.error_message,
        "created_at": iso(user_session.created_at),
        "updated_at": iso(user_session.updated_at),
    }


def grading_session_data(grading) -> dict:
    return {
        "id": str(grading.pk),
        "status": grading.status,
        "grading_session_id": grading.grading_session_id,
        "grading_part_id": grading.grading_part_id,
        "pod_id": grading.pod_id,
        "error_message": grading.error_message,
        "created_at": iso(grading.created_at),
        "updated_at": iso(grading.updated_at),
    }


def score_report_data(report) -> dict:
    return {
        "id": str(report.pk),
        "grading_session_id": str(report.grading_session_id) if report.grading_session_id else None,
        "score": float(report.score),
        "max_score": float(report.max_score),
        "cut_score": float(report.cut_score),
        "passed": report.passed,
        "manual": report.manual,
        "submitted_at": iso(report.submitted_at),
        "created_at": iso(report.created_at),
        "sections": [
            {
                "name": section.name,
                "score": float(section.score),
                "max_score": float(section.max_score),
                "weight": float(section.weight),
                "passed": section.passed,
            }
            for section in report.sections.all()
        ],
    }


def session_summary(session: LabletSession) -> str:
    """One human line: id, status, owner, definition and timeslot."""
    definition = session.definition
    return (
        f"{session.pk} {session.status} owner={session.owner} "
        f"definition={definition.name} {session.definition_version} "
        f"timeslot={iso(session.timeslot_start)}..{iso(session.timeslot_end)}"
    )
