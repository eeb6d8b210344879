"""Limits at the door for a definition's lab YAML (SPEC §12): what a CML topology never holds (aliases,
dates, binary, sets, NaN, lone surrogates, 5,000-digit numbers) and what is too big (text, nodes, depth)
is refused at create with a field error on `lab_yaml`, and nothing is stored."""

import time

import pytest
from django.core.exceptions import ValidationError

from sessions.definitions import definition_create
from sessions.labyaml import MAX_LAB_YAML, MAX_NODES, LabYamlError, parse_topology
from sessions.models import LabletDefinition
from tests.api.conftest import assert_field_error, client_for
from tests.factories import DEMO_LAB, DefinitionFactory
from tests.support.commands import fails

pytestmark = pytest.mark.django_db


def _lab(label: str = "r1", *, extra: str = "") -> str:
    """A one-node topology whose node label is the YAML text `label` (quoted or not, as given)."""
    return f"lab:\n  title: t\nnodes:\n  - id: n0\n    label: {label}\n    node_definition: iosv\n{extra}"


def _billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    lines.append(f"nodes:\n  - id: n0\n    node_definition: iosv\n    configuration: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def _refusal(lab_yaml: str) -> str:
    """Create a definition from `lab_yaml`; it must be refused on `lab_yaml` alone. Returns the message."""
    with pytest.raises(ValidationError) as excinfo:
        definition_create(actor="admin", name="bad", lab_yaml=lab_yaml)
    errors = excinfo.value.message_dict
    assert list(errors) == ["lab_yaml"], errors
    assert not LabletDefinition.objects.exists()
    return errors["lab_yaml"][0]


def test_the_demo_lab_still_passes():
    assert definition_create(actor="admin", name="demo", lab_yaml=DEMO_LAB).node_count == 2


def test_an_alias_bomb_is_refused_at_once():
    started = time.monotonic()
    message = _refusal(_billion_laughs())
    assert time.monotonic() - started < 1
    assert "alias" in message and "line 2" in message


def test_any_alias_is_refused_even_a_small_one():
    with pytest.raises(LabYamlError, match="alias"):
        parse_topology("x: &x n0\nnodes:\n  - id: *x\n    node_definition: iosv\n")


def test_an_integer_of_5000_digits_is_a_field_error():
    message = _refusal(_lab("r1", extra=f"    x: {'9' * 5000}\n"))
    assert "line 7" in message and "number" in message


@pytest.mark.parametrize("value", [str(2**64), "0b" + "1" * 200, f"-{2**63 + 1}"])
def test_integers_beyond_64_bits_are_refused(value):
    assert "line 7" in _refusal(_lab("r1", extra=f"    x: {value}\n"))


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("2024-01-01", "date"),
        ("2024-01-01T10:00:00Z", "date"),
        ("!!binary aGVsbG8=", "binary"),
        ("!!set {a, b}", "set"),
        ("!!omap [a: 1]", "omap"),
        (".nan", "finite"),
        (".inf", "finite"),
        ("-.inf", "finite"),
        ("1.0e+999", "finite"),
        ("!!int abc", "int"),
        ("!!bool maybe", "bool"),
        ("!custom x", "!custom"),
    ],
)
def test_scalar_types_a_topology_never_has_are_refused_naming_the_line(value, named):
    message = _refusal(_lab("r1", extra=f"    x: {value}\n"))
    assert named in message and "line 7" in message, message


def test_mapping_keys_must_be_text():
    assert "line 7" in _refusal(_lab("r1", extra="    1: one\n"))


def test_the_plain_types_are_accepted():
    lab = _lab(
        '"r1"', extra="    x: 1.5\n    y: -3\n    z: true\n    w: null\n    v: [a, {b: c}]\n    u: '2024-01-01'\n"
    )
    assert definition_create(actor="admin", name="ok", lab_yaml=lab).node_count == 1


@pytest.mark.parametrize("label", [r'"\ud800"', r'"a\udfffb"', r'"\ud800\udc00"', r'"\0"'])
def test_escaped_surrogates_and_nul_are_refused(label):
    assert "line 5, column 12" in _refusal(_lab(label, extra='    tags: ["vnc:5900"]\n'))


def test_a_surrogate_in_the_text_itself_is_refused():
    assert "surrogate" in _refusal(_lab("r\ud800"))


def test_a_stored_definition_with_an_escaped_surrogate_does_not_break_its_pages(admin_client):
    """Stored before the door was shut (a raw update): its list, page and admin page still answer."""
    definition = DefinitionFactory()
    LabletDefinition.objects.filter(pk=definition.pk).update(
        lab_yaml=_lab(r'"\ud800"'), description="r\U00010000", port_template=[{"name": "\U00010000_vnc"}]
    )
    for url in (
        "/definitions/",
        f"/definitions/{definition.pk}/",
        f"/admin/lablets/labletdefinition/{definition.pk}/change/",
        "/api/v1/definitions/",
        f"/api/v1/definitions/{definition.pk}/",
    ):
        assert admin_client.get(url).status_code == 200, url


def test_the_text_size_is_bounded():
    message = _refusal(_lab("r1") + "#" * MAX_LAB_YAML)
    assert f"{MAX_LAB_YAML:,}" in message


def test_the_node_count_is_bounded():
    nodes = "".join(f"  - {{id: n{i}, node_definition: iosv}}\n" for i in range(MAX_NODES + 1))
    assert str(MAX_NODES) in _refusal(f"nodes:\n{nodes}")
    nodes = "".join(f"  - {{id: n{i}, node_definition: iosv}}\n" for i in range(MAX_NODES))
    assert definition_create(actor="admin", name="big", lab_yaml=f"nodes:\n{nodes}").node_count == MAX_NODES


def test_the_nesting_depth_is_bounded():
    assert _refusal(_lab("r1", extra=f"    x: {'[' * 100}{']' * 100}\n")) == "is nested too deeply to parse"


def test_rest_create_is_400_naming_lab_yaml(admin_user):
    admin_api = client_for(admin_user)
    response = admin_api.post("/api/v1/definitions/", {"name": "bomb", "lab_yaml": _billion_laughs()})
    assert "alias" in assert_field_error(response, "lab_yaml")["lab_yaml"][0]
    response = admin_api.post("/api/v1/definitions/", {"name": "date", "lab_yaml": _lab("2024-01-01")})
    assert_field_error(response, "lab_yaml")
    assert not LabletDefinition.objects.exists()


def test_the_form_page_shows_the_error(admin_client):
    data = {
        "name": "bomb", "version": "1.0.0", "lab_yaml": _lab(r'"\ud800"'), "cpu_cores": 1, "memory_gb": 1,
        "storage_gb": 1, "max_duration_minutes": 60, "status": "ACTIVE",
    }  # fmt: skip
    response = admin_client.post("/definitions/new/", data)
    assert response.status_code == 422 and 'id="id_lab_yaml-error"' in response.content.decode()
    assert not LabletDefinition.objects.exists()


def test_definition_import_fails_with_one_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_billion_laughs())
    assert fails("definition_import", str(path), "--name", "bomb").startswith("lab_yaml:")
    assert not LabletDefinition.objects.exists()


def test_an_unprintable_character_is_a_field_error():
    assert "line 1, column 12" in _refusal("nodes: [{id\x1b: n0}]")
