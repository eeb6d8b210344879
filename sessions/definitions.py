"""Writers for lablet definitions: validation (lab YAML, resources, licences, CML versions), creation,
new versions (a published version is immutable) and status changes."""

import hashlib
import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from lcm.events import publish_change
from lcm.fsm import actor_name, apply_transition, normalize_status
from lcm.versions import version_key
from sessions.labyaml import LabYamlError, analyze_lab_yaml
from sessions.models import LabletDefinition
from sessions.states import DEFINITION_TRANSITIONS, DefinitionStatus, GradingMode
from workers.states import LicenseType

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
CML_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")

_DEFINITION_FIELDS = (
    "description", "lab_artifact_uri", "cpu_cores", "memory_gb", "storage_gb", "license_affinity",
    "cml_version_min", "cml_version_max", "max_duration_minutes", "boot_lead_minutes", "form_qualified_name",
    "grading_enabled", "grading_mode", "pass_percent", "hold_for_review_hours", "lab_reuse_enabled",
)  # fmt: skip
_CONTENT_FIELDS = ("lab_yaml", *_DEFINITION_FIELDS)


def _positive_int(errors, name, value, *, allow_none=False, minimum=1, maximum=100_000):
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        errors[name] = ["must be a whole number"]
        return None
    try:
        number = int(value)
        if str(value).strip() != str(number) and not isinstance(value, int):
            raise ValueError
    except (TypeError, ValueError):
        errors[name] = ["must be a whole number"]
        return None
    if not minimum <= number <= maximum:
        errors[name] = [f"must be between {minimum} and {maximum}"]
        return None
    return number


def _clean_identity(data: dict, clean: dict, errors: dict) -> None:
    name = str(data.get("name") or "").strip()
    if not name:
        errors["name"] = ["is required"]
    elif len(name) > 200:
        errors["name"] = ["must be at most 200 characters"]
    clean["name"] = name
    version = str(data.get("version") or "1.0.0").strip()
    if not SEMVER.match(version):
        errors["version"] = [f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH)"]
    clean["version"] = version


def _clean_lab_yaml(data: dict, clean: dict, errors: dict) -> None:
    lab_yaml = data.get("lab_yaml")
    try:
        analysis = analyze_lab_yaml(lab_yaml if isinstance(lab_yaml, str) else "")
    except LabYamlError as exc:
        errors["lab_yaml"] = [f"{exc.field}: {exc.message}" if exc.field != "lab_yaml" else exc.message]
        analysis = None
    clean["lab_yaml"] = lab_yaml
    if analysis is not None:
        clean["node_count"] = analysis.node_count
        clean["node_definitions_required"] = analysis.node_definitions
        clean["port_template"] = analysis.port_template
        clean["lab_yaml_hash"] = hashlib.sha256(lab_yaml.encode()).hexdigest()


def _clean_resources(data: dict, clean: dict, errors: dict) -> None:
    requirements = data.get("resource_requirements") or {}
    if not isinstance(requirements, dict):
        errors["resource_requirements"] = ["must be an object with cpu_cores, memory_gb, storage_gb"]
        requirements = {}
    for key, default in (("cpu_cores", 1), ("memory_gb", 1), ("storage_gb", 1)):
        value = data.get(key, requirements.get(key, default))
        clean[key] = _positive_int(errors, key, value, maximum=10_000)


def _clean_affinity(affinity, errors: dict) -> list[str]:
    affinity = affinity or []
    if isinstance(affinity, str):
        affinity = [a for a in re.split(r"[,\s]+", affinity) if a]
    if not isinstance(affinity, list):
        errors["license_affinity"] = ["must be a list of PERSONAL, ENTERPRISE, EVALUATION"]
        affinity = []
    normalized = []
    for item in affinity:
        text = str(item).strip().upper()
        if text not in LicenseType.values:
            errors["license_affinity"] = [f"unknown licence {item!r}; expected PERSONAL, ENTERPRISE or EVALUATION"]
        elif text not in normalized:
            normalized.append(text)
    return normalized


def _clean_cml_versions(data: dict, clean: dict, errors: dict) -> None:
    for key in ("cml_version_min", "cml_version_max"):
        text = str(data.get(key) or "").strip()
        if text and not CML_VERSION.match(text):
            errors[key] = [f"{text!r} is not a version like 2.9 or 2.9.1"]
        clean[key] = text
    if (
        clean["cml_version_min"]
        and clean["cml_version_max"]
        and "cml_version_min" not in errors
        and "cml_version_max" not in errors
        and version_key(clean["cml_version_min"]) > version_key(clean["cml_version_max"])
    ):
        errors["cml_version_max"] = ["must not be lower than cml_version_min"]


def _clean_grading(data: dict, clean: dict, errors: dict) -> None:
    """`grading_mode` (auto | manual | none) and `grading_enabled` say one thing: a mode alone decides, a flag
    alone means auto or none, and the two given apart must agree. Then the pass mark and the review hold."""
    mode = data.get("grading_mode")
    enabled = data.get("grading_enabled")
    if mode in (None, ""):
        mode = GradingMode.AUTO if bool(enabled) else GradingMode.NONE
    elif mode not in GradingMode.values:
        errors["grading_mode"] = [f"must be one of {', '.join(GradingMode.values)}"]
        mode = GradingMode.NONE
    elif enabled is not None and bool(enabled) != (mode != GradingMode.NONE):
        errors["grading_mode"] = [f"{mode} contradicts grading_enabled={str(bool(enabled)).lower()}"]
    clean["grading_mode"] = mode
    clean["grading_enabled"] = mode != GradingMode.NONE
    clean["pass_percent"] = _positive_int(
        errors, "pass_percent", data.get("pass_percent"), allow_none=True, minimum=0, maximum=100
    )
    clean["hold_for_review_hours"] = _positive_int(
        errors, "hold_for_review_hours", data.get("hold_for_review_hours") or 0, minimum=0, maximum=24 * 30
    )


def _clean_definition(data: dict) -> dict:
    """Validate definition fields; raises ValidationError naming every bad field."""
    errors: dict[str, list[str]] = {}
    clean: dict = {}
    _clean_identity(data, clean, errors)
    _clean_lab_yaml(data, clean, errors)
    clean["description"] = str(data.get("description") or "")
    clean["lab_artifact_uri"] = str(data.get("lab_artifact_uri") or "")[:500]
    _clean_resources(data, clean, errors)
    clean["license_affinity"] = _clean_affinity(data.get("license_affinity"), errors)
    _clean_cml_versions(data, clean, errors)
    clean["max_duration_minutes"] = _positive_int(
        errors, "max_duration_minutes", data.get("max_duration_minutes", 60), maximum=7 * 24 * 60
    )
    clean["boot_lead_minutes"] = _positive_int(
        errors, "boot_lead_minutes", data.get("boot_lead_minutes"), allow_none=True, minimum=0, maximum=24 * 60
    )
    clean["form_qualified_name"] = str(data.get("form_qualified_name") or "").strip()
    _clean_grading(data, clean, errors)
    clean["lab_reuse_enabled"] = bool(data.get("lab_reuse_enabled", True))
    if clean["grading_enabled"] and not clean["form_qualified_name"]:
        errors["form_qualified_name"] = ["is required when grading is enabled"]
    if errors:
        raise ValidationError(errors)
    return clean


def definition_create(*, actor, status=DefinitionStatus.ACTIVE, **data) -> LabletDefinition:
    """Validate and store a new definition (or a new version of a name). Raises ValidationError."""
    clean = _clean_definition(data)
    status = normalize_status(status, DefinitionStatus)
    try:
        with transaction.atomic():
            definition = LabletDefinition.objects.create(status=status, created_by=actor_name(actor), **clean)
    except IntegrityError:
        raise ValidationError(
            {"version": [f"{clean['name']} {clean['version']} already exists; publish a new version"]}
        ) from None
    publish_change("definition", definition.pk, "", status, actor=actor_name(actor), reason="created")
    return definition


def _next_version(name: str, current: str) -> str:
    versions = LabletDefinition.objects.filter(name=name).values_list("version", flat=True)
    newest = max([current, *versions], key=version_key)
    major, minor, _patch = (list(version_key(newest)) + [0, 0, 0])[:3]
    return f"{major}.{minor + 1}.0"


def definition_new_version(definition: LabletDefinition, *, actor, version: str | None = None, **changes):
    """Publish a changed copy of `definition` as a new version (published versions are immutable)."""
    unknown = set(changes) - set(_CONTENT_FIELDS) - {"resource_requirements", "name"}
    if unknown:
        raise ValidationError({name: ["is not a definition field"] for name in sorted(unknown)})
    if changes.get("name") not in (None, definition.name):
        raise ValidationError({"name": ["cannot change; create a new definition instead"]})
    data = {f: getattr(definition, f) for f in _CONTENT_FIELDS}
    if isinstance(changes.get("resource_requirements"), dict):
        # New requirements replace the old ones (individual fields given as well still win).
        for key in ("cpu_cores", "memory_gb", "storage_gb"):
            if key in changes["resource_requirements"]:
                data.pop(key, None)
    data.update({k: v for k, v in changes.items() if k != "name"})
    new_version = version or _next_version(definition.name, definition.version)
    if SEMVER.match(new_version) and version_key(new_version) <= version_key(definition.version):
        raise ValidationError({"version": [f"must be greater than {definition.version}"]})
    return definition_create(actor=actor, name=definition.name, version=new_version, **data)


def definition_transition(definition: LabletDefinition, target: str, *, actor, reason: str = "") -> LabletDefinition:
    """Change a definition's status (ACTIVE/INACTIVE/DEPRECATED/ARCHIVED)."""
    target = normalize_status(target, DefinitionStatus)
    with transaction.atomic():
        locked = LabletDefinition.objects.select_for_update().get(pk=definition.pk)
        previous = apply_transition(locked, DEFINITION_TRANSITIONS, target, entity="definition")
        locked.save()
    publish_change("definition", locked.pk, previous, target, actor=actor_name(actor), reason=reason)
    return locked
