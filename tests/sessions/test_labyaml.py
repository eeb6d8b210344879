"""Lab topology functions: parse (YAML or JSON), analyse, rewrite ports into tags and smart annotations."""

import json

import pytest
import yaml

import workers.labs
from sessions.labyaml import (
    LabYamlError,
    PortTag,
    PortTagError,
    analyze_lab_yaml,
    parse_port_tag,
    parse_topology,
    rewrite_ports,
)
from tests.factories import DEMO_LAB

ALLOCATION = {"vmanage-mock_serial": 3001, "ubuntu-desktop_serial": 3002, "ubuntu-desktop_vnc": 3003}


def test_sample_lab_parses_to_two_nodes_and_serial_serial_vnc(sample_lab_yaml):
    analysis = analyze_lab_yaml(sample_lab_yaml)
    assert analysis.node_count == 2
    assert [p.protocol for p in analysis.ports] == ["serial", "serial", "vnc"]
    assert [p.name for p in analysis.ports] == list(ALLOCATION)
    assert analysis.node_definitions == ["mock-server", "ubuntu-desktop-24-04-v2"]
    assert analysis.title == "DEVASC_200-901_LAB-2.5.1"


def test_rewrite_puts_allocated_ports_into_node_tags_and_smart_annotations(sample_lab_yaml):
    rewritten = yaml.safe_load(rewrite_ports(sample_lab_yaml, ALLOCATION))
    assert [n["tags"] for n in rewritten["nodes"]] == [["serial:3001"], ["serial:3002", "vnc:3003"]]
    annotations = rewritten["smart_annotations"]
    assert [a["tag"] for a in annotations] == ["serial:3001", "serial:3002", "vnc:3003"]
    assert [a["label"] for a in annotations] == ["serial:3001", "serial:3002", "vnc:3003"]
    # Nothing else changes: the node configurations and links are as they were.
    original = yaml.safe_load(sample_lab_yaml)
    assert rewritten["links"] == original["links"]
    assert [n["configuration"] for n in rewritten["nodes"]] == [n["configuration"] for n in original["nodes"]]
    # The rewritten lab still analyses to the same template, now on the new ports.
    again = analyze_lab_yaml(rewrite_ports(sample_lab_yaml, ALLOCATION))
    assert [p.port for p in again.ports] == [3001, 3002, 3003]


def test_demo_lab_keeps_ordinary_tags():
    analysis = analyze_lab_yaml(DEMO_LAB)
    assert [p.name for p in analysis.ports] == ["edge-router_serial", "workstation_serial", "workstation_vnc"]
    rewritten = yaml.safe_load(
        rewrite_ports(DEMO_LAB, {"edge-router_serial": 2000, "workstation_serial": 2001, "workstation_vnc": 2002})
    )
    assert rewritten["nodes"][1]["tags"] == ["serial:2001", "vnc:2002", "candidate"]


def test_json_topologies_are_accepted(sample_lab_yaml):
    as_json = json.dumps(yaml.safe_load(sample_lab_yaml))
    assert analyze_lab_yaml(as_json).node_count == 2


def test_duplicate_protocols_on_one_node_get_distinct_names():
    text = yaml.safe_dump(
        {"nodes": [{"id": "n0", "label": "r1", "node_definition": "iosv", "tags": ["ssh:22", "ssh:2222"]}]}
    )
    assert [p.name for p in analyze_lab_yaml(text).ports] == ["r1_ssh", "r1_ssh_2"]


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("", "lab_yaml", "is empty"),
        ("nodes: []\x00\n", "lab_yaml", "NUL"),
        ("[" * 5000 + "]" * 5000, "lab_yaml", "nested too deeply"),
        ("nodes: [unclosed", "lab_yaml", "not valid YAML"),
        ("- just\n- a list\n", "lab_yaml", "must be a mapping"),
        ("lab: {title: x}\n", "lab_yaml.nodes", "non-empty list"),
        ("nodes: []\n", "lab_yaml.nodes", "non-empty list"),
        ("nodes:\n  - label: a\n    node_definition: iosv\n", "lab_yaml.nodes[0].id", "is required"),
        ("nodes:\n  - id: n0\n    label: a\n", "lab_yaml.nodes[0].node_definition", "is required"),
        (
            "nodes:\n  - {id: n0, node_definition: iosv}\n  - {id: n0, node_definition: iosv}\n",
            "lab_yaml.nodes[1].id",
            "duplicate",
        ),
        (
            "nodes:\n  - {id: n0, node_definition: iosv, tags: [gopher:70]}\n",
            "lab_yaml.nodes[0].tags[0]",
            "unknown protocol",
        ),
        ("nodes:\n  - {id: n0, node_definition: iosv, tags: ['vnc:99999']}\n", "lab_yaml.nodes[0].tags[0]", "outside"),
        ("nodes:\n  - {id: n0, node_definition: iosv, tags: ['serial:abc']}\n", "lab_yaml.nodes[0].tags[0]", "numeric"),
        ("nodes:\n  - {id: n0, node_definition: iosv, tags: serial:22}\n", "lab_yaml.nodes[0].tags", "list"),
        ("nodes:\n  - {id: n0, node_definition: iosv, tags: [5]}\n", "lab_yaml.nodes[0].tags[0]", "string"),
    ],
)
def test_validation_errors_name_the_field_and_the_problem(text, field, message):
    with pytest.raises(LabYamlError) as excinfo:
        analyze_lab_yaml(text)
    assert excinfo.value.field == field
    assert message in excinfo.value.message


def test_ordinary_tags_with_colons_are_not_ports():
    text = "nodes:\n  - {id: n0, node_definition: iosv, tags: ['group:core', 'site:paris']}\n"
    assert analyze_lab_yaml(text).ports == []


def test_rewrite_requires_every_port_and_valid_numbers(sample_lab_yaml):
    with pytest.raises(LabYamlError, match="no port allocated for ubuntu-desktop_vnc"):
        rewrite_ports(sample_lab_yaml, {"vmanage-mock_serial": 1, "ubuntu-desktop_serial": 2})
    with pytest.raises(LabYamlError) as excinfo:
        rewrite_ports(sample_lab_yaml, {**ALLOCATION, "ubuntu-desktop_vnc": 70000})
    assert excinfo.value.field == "allocation.ubuntu-desktop_vnc"


def test_parse_returns_the_mapping(sample_lab_yaml):
    assert parse_topology(sample_lab_yaml)["lab"]["version"] == "0.3.0"


# --- the one `protocol:port` tag parser (lab YAML validation and CML lab discovery) ---------


@pytest.mark.parametrize(
    ("tag", "parsed"),
    [
        ("serial:5000", PortTag("serial", 5000)),
        ("vnc:5901", PortTag("vnc", 5901)),
        (" VNC : 5901 ", PortTag("vnc", 5901)),
        ("https:1", PortTag("https", 1)),
        ("telnet:65535", PortTag("telnet", 65535)),
        ("group:core", None),
        ("site:paris", None),
        ("core", None),
        ("", None),
    ],
)
def test_parse_port_tag(tag, parsed):
    assert parse_port_tag(tag) == parsed


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("gopher:70", "unknown protocol 'gopher'"),
        ("vnc:0", "outside 1–65535"),
        ("vnc:99999", "outside 1–65535"),
        ("serial:abc", "numeric port"),
        ("ssh:", "numeric port"),
        ("ssh:22:23", "numeric port"),
        ("http:-80", "numeric port"),
        (5, "must be a string, got int"),
        (None, "must be a string, got NoneType"),
    ],
)
def test_parse_port_tag_rejects_bad_tags(tag, message):
    with pytest.raises(PortTagError, match=message):
        parse_port_tag(tag)


def test_discovery_reads_node_ports_with_the_same_parser():
    class FakeCml:
        def nodes(self, lab_id):
            return [
                {"id": "n0", "label": "edge", "tags": ["serial:5000", "group:core", "VNC:5901", "gopher:70"]},
                {"id": "n1", "tags": ["ssh:22", "vnc:99999", "serial:abc", 7]},
            ]

    assert workers.labs._node_ports(FakeCml(), "lab-1") == {"edge_serial": 5000, "edge_vnc": 5901, "n1_ssh": 22}
