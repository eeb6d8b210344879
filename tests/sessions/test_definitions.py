"""Definition services: validation with field errors, derived fields, versions, status moves."""

import pytest
from django.core.exceptions import ValidationError

from lcm.fsm import InvalidTransition
from sessions.definitions import definition_create, definition_new_version, definition_transition
from sessions.models import LabletDefinition
from tests.factories import DEMO_LAB

pytestmark = pytest.mark.django_db


def _create(**overrides):
    data = {"name": "demo", "lab_yaml": DEMO_LAB, "actor": "admin"} | overrides
    return definition_create(**data)


def test_create_derives_fields_from_the_yaml():
    definition = _create(resource_requirements={"cpu_cores": 4, "memory_gb": 8, "storage_gb": 20})
    assert definition.node_count == 2
    assert definition.node_definitions_required == ["desktop", "iosv"]
    assert definition.port_names == ["edge-router_serial", "workstation_serial", "workstation_vnc"]
    assert len(definition.lab_yaml_hash) == 64
    assert definition.resource_requirements == {"cpu_cores": 4, "memory_gb": 8, "storage_gb": 20}
    assert definition.status == "ACTIVE"


def test_sample_lab_definition(sample_lab_yaml):
    definition = _create(name="devasc", lab_yaml=sample_lab_yaml)
    assert [p["protocol"] for p in definition.port_template] == ["serial", "serial", "vnc"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"version": "1.0"}, "version"),
        ({"lab_yaml": "nodes: ["}, "lab_yaml"),
        ({"cpu_cores": 0}, "cpu_cores"),
        ({"memory_gb": "lots"}, "memory_gb"),
        ({"license_affinity": ["GOLD"]}, "license_affinity"),
        ({"cml_version_min": "two"}, "cml_version_min"),
        ({"cml_version_min": "2.10", "cml_version_max": "2.9"}, "cml_version_max"),
        ({"max_duration_minutes": -5}, "max_duration_minutes"),
        ({"grading_enabled": True, "form_qualified_name": ""}, "form_qualified_name"),
    ],
)
def test_bad_input_names_the_field_and_creates_nothing(overrides, field):
    with pytest.raises(ValidationError) as excinfo:
        _create(**overrides)
    assert field in excinfo.value.message_dict
    assert not LabletDefinition.objects.exists()


def test_cml_versions_compare_numerically():
    definition = _create(cml_version_min="2.9", cml_version_max="2.10")
    assert definition.cml_version_max == "2.10"


def test_name_and_version_are_unique():
    _create()
    with pytest.raises(ValidationError) as excinfo:
        _create()
    assert "version" in excinfo.value.message_dict


def test_a_change_makes_a_new_version():
    first = _create(version="1.2.3")
    second = definition_new_version(first, actor="admin", max_duration_minutes=90)
    assert second.version == "1.3.0"
    assert second.max_duration_minutes == 90
    first.refresh_from_db()
    assert first.max_duration_minutes == 60  # the published version is untouched
    with pytest.raises(ValidationError):
        definition_new_version(first, actor="admin", version="1.0.0")
    bigger = definition_new_version(first, actor="admin", resource_requirements={"cpu_cores": 8})
    assert bigger.cpu_cores == 8 and bigger.memory_gb == first.memory_gb


def test_status_moves_follow_the_table():
    definition = _create()
    assert definition_transition(definition, "inactive", actor="admin").status == "INACTIVE"
    assert definition_transition(definition, "ARCHIVED", actor="admin").status == "ARCHIVED"
    with pytest.raises(InvalidTransition):
        definition_transition(definition, "ACTIVE", actor="admin")
