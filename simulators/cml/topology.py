"""The CML import format (a topology in YAML or JSON): parsed, validated as CML 2.9 does, turned into a lab,
and written back out for a download."""

import json

import yaml

from simulators.cml.state import CMLError, SimInterface, SimLab, SimLink, SimNode, new_id
from simulators.common import Clock

# The node definitions a simulated worker knows (configurable); includes those of
# sample-cml-lab.yaml and of LCM's demo lab.
DEFAULT_NODE_DEFINITIONS = frozenset(
    {
        "alpine",
        "asav",
        "cat8000v",
        "cat9000v-q200",
        "cat9000v-uadp",
        "csr1000v",
        "desktop",
        "external_connector",
        "iol-xe",
        "ioll2-xe",
        "iosv",
        "iosvl2",
        "iosxrv9000",
        "mock-server",
        "nxosv9000",
        "server",
        "trex",
        "ubuntu",
        "ubuntu-desktop-24-04-v2",
        "unmanaged_switch",
        "wan_emulator",
    }
)

SCHEMA_VERSIONS = {"0.0.1", "0.0.2", "0.0.3", "0.0.4", "0.0.5", "0.1.0", "0.2.0", "0.2.1", "0.2.2", "0.3.0"}
TOPOLOGY_KEYS = {"nodes", "links", "lab", "annotations", "smart_annotations"}
LAB_KEYS = {"version", "title", "description", "notes"}
NODE_KEYS = {
    "id",
    "label",
    "node_definition",
    "image_definition",
    "x",
    "y",
    "ram",
    "cpus",
    "cpu_limit",
    "data_volume",
    "boot_disk_size",
    "hide_links",
    "tags",
    "parameters",
    "configuration",
    "interfaces",
}
NODE_UPDATE_KEYS = NODE_KEYS - {"id", "node_definition", "interfaces"} | {"pinned_compute_id"}
INTERFACE_KEYS = {"id", "type", "node", "label", "slot", "mac_address"}
LINK_KEYS = {"id", "i1", "i2", "n1", "n2", "label", "conditioning"}
_COMMON_ANNOTATION = {
    "border_color": "#00000000",
    "border_style": "",
    "color": "#808080FF",
    "thickness": 1,
    "x1": 0.0,
    "y1": 0.0,
    "z_index": 0,
}
ANNOTATION_DEFAULTS = {
    "text": _COMMON_ANNOTATION
    | {
        "rotation": 0,
        "text_bold": False,
        "text_content": "",
        "text_font": "monospace",
        "text_italic": False,
        "text_size": 12,
        "text_unit": "pt",
    },
    "rectangle": _COMMON_ANNOTATION | {"rotation": 0, "x2": 100.0, "y2": 100.0, "border_radius": 0},
    "ellipse": _COMMON_ANNOTATION | {"rotation": 0, "x2": 100.0, "y2": 100.0},
    "line": _COMMON_ANNOTATION | {"x2": 100.0, "y2": 100.0, "line_start": None, "line_end": None},
}
SMART_ANNOTATION_KEYS = {
    "is_on",
    "padding",
    "tag",
    "label",
    "tag_offset_x",
    "tag_offset_y",
    "tag_size",
    "group_distance",
    "thickness",
    "border_style",
    "fill_color",
    "border_color",
    "z_index",
}


# -- import ------------------------------------------------------------------------------


def parse_topology(data: bytes, node_definitions: frozenset[str]) -> dict:
    """The request body as a valid topology, or CMLError 400."""
    try:
        text = data.decode("utf-8")
        try:
            topology = json.loads(text)  # what clients send (the spec's JSON Topology); YAML otherwise
        except ValueError:
            topology = yaml.safe_load(text)
    except (UnicodeDecodeError, RecursionError, yaml.YAMLError) as exc:
        raise CMLError(400, f"Import failed: the body is neither YAML nor JSON ({exc.__class__.__name__}).") from None
    if not isinstance(topology, dict):
        raise CMLError(400, "Import failed: the topology must be an object.")
    validate_topology(topology, node_definitions)
    return topology


def _fail(path: str, message: str):
    raise CMLError(400, f"Import failed: {path}: {message}")


def _check_keys(obj, allowed: set, required: set, path: str) -> None:
    if not isinstance(obj, dict):
        _fail(path, "must be an object")
    extra = sorted(set(obj) - allowed)
    if extra:
        _fail(path, f"unexpected field(s) {', '.join(map(str, extra))}")
    missing = sorted(required - set(obj))
    if missing:
        _fail(path, f"missing field(s) {', '.join(missing)}")


def validate_topology(topology: dict, node_definitions: frozenset[str]) -> None:
    """CMLError 400 naming the first field CML would reject."""
    _check_keys(topology, TOPOLOGY_KEYS, {"nodes", "links", "lab"}, "topology")
    _validate_lab(topology["lab"])
    if not isinstance(topology["nodes"], list):
        _fail("nodes", "must be a list")
    if not isinstance(topology["links"], list):
        _fail("links", "must be a list")
    node_ifaces: dict[str, set] = {}
    for index, node in enumerate(topology["nodes"]):
        _validate_node(node, f"nodes[{index}]", node_definitions, node_ifaces)
    _validate_links(topology["links"], node_ifaces)
    for index, annotation in enumerate(topology.get("annotations") or []):
        if not isinstance(annotation, dict) or annotation.get("type") not in ANNOTATION_DEFAULTS:
            _fail(f"annotations[{index}].type", "must be text, rectangle, ellipse or line")
    for index, annotation in enumerate(topology.get("smart_annotations") or []):
        if not isinstance(annotation, dict):
            _fail(f"smart_annotations[{index}]", "must be an object")


def _validate_lab(lab) -> None:
    _check_keys(lab, LAB_KEYS, {"version"}, "lab")
    if str(lab["version"]) not in SCHEMA_VERSIONS:
        _fail("lab.version", f"unsupported schema version {lab['version']!r}")
    title = lab.get("title")
    if title is not None and (not isinstance(title, str) or not 1 <= len(title) <= 64):
        _fail("lab.title", "must be 1 to 64 characters")


def _validate_node(node, path: str, node_definitions: frozenset[str], node_ifaces: dict[str, set]) -> None:
    """Check one node and add its interface ids to `node_ifaces`."""
    _check_keys(node, NODE_KEYS, {"id", "label", "node_definition", "x", "y"}, path)
    if str(node["id"]) in node_ifaces:
        _fail(f"{path}.id", f"duplicate node id {node['id']!r}")
    if node["node_definition"] not in node_definitions:
        _fail(f"{path}.node_definition", f"unknown node definition {node['node_definition']!r}")
    for axis in ("x", "y"):
        value = node[axis]
        if isinstance(value, bool) or not isinstance(value, int | float) or not -15000 <= value <= 15000:
            _fail(f"{path}.{axis}", "must be a number within -15000..15000")
    if not isinstance(node["label"], str) or not 1 <= len(node["label"]) <= 128:
        _fail(f"{path}.label", "must be 1 to 128 characters")
    tags = node.get("tags") or []
    if not isinstance(tags, list) or any(not isinstance(t, str) or len(t) > 64 for t in tags):
        _fail(f"{path}.tags", "must be a list of strings of at most 64 characters")
    ifaces = set()
    for i_index, iface in enumerate(node.get("interfaces") or []):
        i_path = f"{path}.interfaces[{i_index}]"
        _check_keys(iface, INTERFACE_KEYS, {"id", "type"}, i_path)
        if iface["type"] not in ("physical", "loopback"):
            _fail(f"{i_path}.type", "must be physical or loopback")
        if str(iface["id"]) in ifaces:
            _fail(f"{i_path}.id", f"duplicate interface id {iface['id']!r}")
        ifaces.add(str(iface["id"]))
    node_ifaces[str(node["id"])] = ifaces


def _validate_links(links: list, node_ifaces: dict[str, set]) -> None:
    link_ids = set()
    for index, link in enumerate(links):
        path = f"links[{index}]"
        _check_keys(link, LINK_KEYS, {"id", "i1", "i2", "n1", "n2"}, path)
        if str(link["id"]) in link_ids:
            _fail(f"{path}.id", f"duplicate link id {link['id']!r}")
        link_ids.add(str(link["id"]))
        for n_key, i_key in (("n1", "i1"), ("n2", "i2")):
            node_id, iface_id = str(link[n_key]), str(link[i_key])
            if node_id not in node_ifaces:
                _fail(f"{path}.{n_key}", f"unknown node {node_id!r}")
            if iface_id not in node_ifaces[node_id]:
                _fail(f"{path}.{i_key}", f"node {node_id!r} has no interface {iface_id!r}")


def create_lab(topology: dict, title: str | None, clock: Clock) -> SimLab:
    """A new lab (every element with a fresh id) from a validated topology."""
    now = clock.time()
    meta = topology["lab"]
    lab = SimLab(
        id=new_id(),
        title=title or meta.get("title") or f"Lab at {clock.now():%a %H:%M %p}",
        description=meta.get("description") or "",
        notes=meta.get("notes") or "",
        version=str(meta["version"]),
        created=now,
        modified=now,
    )
    by_local: dict[tuple[str, str], str] = {}
    node_by_local: dict[str, str] = {}
    for raw in topology["nodes"]:
        node = _create_node(lab, raw, by_local)
        lab.nodes[node.id] = node
        node_by_local[node.local_id] = node.id
    for raw in topology["links"]:
        link = SimLink(
            id=new_id(),
            local_id=str(raw["id"]),
            label=raw.get("label"),
            interface_a=by_local[(str(raw["n1"]), str(raw["i1"]))],
            interface_b=by_local[(str(raw["n2"]), str(raw["i2"]))],
            node_a=node_by_local[str(raw["n1"])],
            node_b=node_by_local[str(raw["n2"])],
            conditioning=raw.get("conditioning") or {},
        )
        lab.links[link.id] = link
    for raw in topology.get("annotations") or []:
        defaults = ANNOTATION_DEFAULTS[raw["type"]]
        lab.annotations.append(
            {"id": new_id(), "type": raw["type"]} | {k: raw.get(k, default) for k, default in defaults.items()}
        )
    for raw in topology.get("smart_annotations") or []:
        lab.smart_annotations.append({"id": new_id()} | {k: v for k, v in raw.items() if k in SMART_ANNOTATION_KEYS})
    return lab


def _create_node(lab: SimLab, raw: dict, by_local: dict[tuple[str, str], str]) -> SimNode:
    """A node with its interfaces (added to the lab and to `by_local`, keyed by the file's own ids)."""
    data = {k: v for k, v in raw.items() if k not in ("id", "label", "node_definition", "x", "y", "tags")}
    data.pop("interfaces", None)
    node = SimNode(
        id=new_id(),
        local_id=str(raw["id"]),
        lab_id=lab.id,
        label=raw["label"],
        node_definition=raw["node_definition"],
        x=int(raw["x"]),
        y=int(raw["y"]),
        data=data,
        tags=list(raw.get("tags") or []),
    )
    for slot, raw_iface in enumerate(raw.get("interfaces") or []):
        iface = SimInterface(
            id=new_id(),
            local_id=str(raw_iface["id"]),
            node_id=node.id,
            label=raw_iface.get("label") or f"eth{slot}",
            type=raw_iface["type"],
            slot=raw_iface.get("slot", slot),
            mac_address=raw_iface.get("mac_address"),
        )
        lab.interfaces[iface.id] = iface
        node.interfaces.append(iface.id)
        by_local[(node.local_id, iface.local_id)] = iface.id
    return node


# -- download ----------------------------------------------------------------------------


def download_yaml(lab: SimLab) -> str:
    """The lab in the import format, with the file's own ids and the current tags."""
    local_node = {node.id: node.local_id for node in lab.nodes.values()}
    local_iface = {iface.id: iface.local_id for iface in lab.interfaces.values()}
    nodes = []
    for node in lab.nodes.values():
        item = {"id": node.local_id, "label": node.label, "node_definition": node.node_definition}
        item |= {"x": node.x, "y": node.y, "tags": list(node.tags)}
        item |= {k: v for k, v in node.data.items() if k != "pinned_compute_id"}
        item["interfaces"] = [
            {"id": iface.local_id, "label": iface.label, "type": iface.type, "slot": iface.slot}
            | ({"mac_address": iface.mac_address} if iface.mac_address else {})
            for iface in (lab.interfaces[i] for i in node.interfaces)
        ]
        nodes.append(item)
    links = [
        {
            "id": link.local_id,
            "n1": local_node[link.node_a],
            "n2": local_node[link.node_b],
            "i1": local_iface[link.interface_a],
            "i2": local_iface[link.interface_b],
            "conditioning": link.conditioning,
        }
        | ({"label": link.label} if link.label else {})
        for link in lab.links.values()
    ]
    topology = {
        "annotations": [{k: v for k, v in a.items() if k != "id"} for a in lab.annotations],
        "smart_annotations": [{k: v for k, v in a.items() if k != "id"} for a in lab.smart_annotations],
        "nodes": nodes,
        "links": links,
        "lab": {"description": lab.description, "notes": lab.notes, "title": lab.title, "version": lab.version},
    }
    return yaml.safe_dump(topology, sort_keys=False, allow_unicode=True)
