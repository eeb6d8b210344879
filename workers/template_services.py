"""Writers for worker templates: the templates YAML file (validated, seeded on `migrate`, synced by
`templates_sync`) and an admin's edit of one template."""

import logging
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from lcm.fsm import actor_name
from workers.models import WorkerTemplate
from workers.states import LicenseType

# Named as before the templates moved out of `workers.services`, so log filters keep matching.
logger = logging.getLogger("lcm.workers.services")

_TEMPLATE_INT_FIELDS = (
    "cpu_cores", "memory_gb", "storage_gb", "max_nodes", "port_range_start", "port_range_end", "startup_minutes",
)  # fmt: skip
_TEMPLATE_FIELDS = (
    "description", "instance_type", "ami_name_pattern", "region", "license_type", "cost_per_hour", "enabled",
    *_TEMPLATE_INT_FIELDS,
)  # fmt: skip


def _clean_template_text(entry: dict, where: str, clean: dict, errors: dict) -> None:
    for key in ("instance_type", "ami_name_pattern"):
        clean[key] = str(entry.get(key) or "").strip()
        if not clean[key]:
            errors[f"{where}.{key}"] = ["is required"]
    clean["description"] = str(entry.get("description") or "")
    clean["region"] = str(entry.get("region") or "us-east-1").strip()
    licence = str(entry.get("license_type") or "ENTERPRISE").strip().upper()
    if licence not in LicenseType.values:
        errors[f"{where}.license_type"] = [f"unknown licence {licence!r}"]
    clean["license_type"] = licence


def _clean_template_numbers(entry: dict, where: str, clean: dict, errors: dict) -> None:
    defaults = {"port_range_start": 2000, "port_range_end": 9999, "startup_minutes": 10}
    for key in _TEMPLATE_INT_FIELDS:
        value = entry.get(key, defaults.get(key))
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            errors[f"{where}.{key}"] = ["must be a non-negative whole number"]
        clean[key] = value
    if not errors and not 1 <= clean["port_range_start"] <= clean["port_range_end"] <= 65535:
        errors[f"{where}.port_range_end"] = ["port range must satisfy 1 ≤ start ≤ end ≤ 65535"]
    try:
        clean["cost_per_hour"] = Decimal(str(entry.get("cost_per_hour", 0)))
        if not clean["cost_per_hour"].is_finite() or clean["cost_per_hour"] < 0:
            errors[f"{where}.cost_per_hour"] = ["must be a non-negative number"]
    except InvalidOperation:
        errors[f"{where}.cost_per_hour"] = ["must be a number"]


def _clean_template(entry: dict, where: str) -> dict:
    """Validate one template entry; errors are keyed `<where>.<field>`."""
    errors: dict[str, list[str]] = {}
    if not isinstance(entry, dict):
        raise ValidationError({where: ["must be a mapping"]})
    clean = {"name": str(entry.get("name") or "").strip()}
    if not clean["name"]:
        errors[f"{where}.name"] = ["is required"]
    _clean_template_text(entry, where, clean, errors)
    _clean_template_numbers(entry, where, clean, errors)
    clean["enabled"] = bool(entry.get("enabled", True))
    if errors:
        raise ValidationError(errors)
    return clean


# A templates file lists a handful of instance types; anything this large is not one.
MAX_TEMPLATE_FILE = 1_000_000


def load_template_file(path: str | Path | None = None) -> list[dict]:
    """Read and validate the templates YAML file; raises ValidationError naming the bad entry and field."""
    path = Path(path or settings.LCM_WORKER_TEMPLATES_FILE)
    try:
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_TEMPLATE_FILE + 1)  # bounded: `/dev/zero` is endless
        if len(text) > MAX_TEMPLATE_FILE:
            raise ValidationError({"file": [f"{path} is larger than {MAX_TEMPLATE_FILE} characters"]})
        data = yaml.safe_load(text)
    except OSError as exc:
        raise ValidationError({"file": [f"cannot read {path}: {exc.strerror}"]}) from None
    except UnicodeDecodeError:
        raise ValidationError({"file": [f"{path} is not UTF-8 text"]}) from None
    except yaml.YAMLError:
        raise ValidationError({"file": [f"{path} is not valid YAML"]}) from None
    entries = data.get("templates") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValidationError({"file": [f"{path} must hold a 'templates' list"]})
    cleaned = [_clean_template(entry, f"templates[{i}]") for i, entry in enumerate(entries)]
    names = [c["name"] for c in cleaned]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValidationError({"templates": [f"duplicate names: {', '.join(duplicates)}"]})
    return cleaned


def templates_seed(path=None, *, overwrite: bool = False) -> dict[str, list[str]]:
    """Create the templates of the file that the DB lacks; with `overwrite`, also reset existing ones.

    Returns `{"created": [...], "updated": [...], "unchanged": [...]}` by name.
    """
    result: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
    entries = load_template_file(path)
    with transaction.atomic():
        existing = {
            t.name: t for t in WorkerTemplate.objects.select_for_update().filter(name__in=[e["name"] for e in entries])
        }
        for entry in entries:
            current = existing.get(entry["name"])
            if current is None:
                WorkerTemplate.objects.create(**entry)
                result["created"].append(entry["name"])
            elif overwrite and any(getattr(current, k) != v for k, v in entry.items()):
                for key, value in entry.items():
                    setattr(current, key, value)
                current.save()
                result["updated"].append(entry["name"])
            else:
                result["unchanged"].append(entry["name"])
    logger.info("worker templates seeded: %s", {k: len(v) for k, v in result.items()})
    return result


def seed_templates_after_migrate(sender, using="default", **kwargs):
    """post_migrate hook: create missing templates from the YAML file (create-only)."""
    if WorkerTemplate._meta.db_table not in connection.introspection.table_names():
        return
    try:
        templates_seed()
    except ValidationError as exc:
        logger.error("worker templates file is invalid, nothing seeded: %s", exc)


def template_update(template: WorkerTemplate, *, actor, **fields) -> WorkerTemplate:
    """Change a template's fields (validated as in the YAML file)."""
    unknown = set(fields) - set(_TEMPLATE_FIELDS)
    if unknown:
        raise ValidationError({name: ["is not a template field"] for name in sorted(unknown)})
    merged = {k: getattr(template, k) for k in _TEMPLATE_FIELDS} | {"name": template.name} | fields
    merged["cost_per_hour"] = str(merged["cost_per_hour"])
    clean = _clean_template(merged, "template")
    with transaction.atomic():
        locked = WorkerTemplate.objects.select_for_update().get(pk=template.pk)
        for key, value in clean.items():
            setattr(locked, key, value)
        locked.save()
    logger.info("template %s updated by %s", locked.name, actor_name(actor))
    return locked
