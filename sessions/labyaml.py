"""Pure functions over CML lab topologies (YAML or JSON text): parse, analyse, rewrite ports.

A node tag `protocol:port` (e.g. `serial:5041`, `vnc:5044`) marks a port the lab exposes;
each becomes one named port of the definition's port template, `<node label>_<protocol>`
(`ubuntu-desktop_vnc`). When LCM places a lab on a worker, it rewrites those tags, and the
`smart_annotations` that show them, with the ports allocated there.
"""

import copy
import functools
import re
from dataclasses import asdict, dataclass, field

import yaml

from workers.states import PORT_PROTOCOLS

# Anything shaped `word:digits` is meant as a port tag; other tags are ordinary labels.
_PORT_TAG = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_-]*)\s*:\s*([0-9]+)\s*$")
_MAX_PORT = 65535
# libyaml's emitter when PyYAML has it (the same output, many times faster). Parsing stays on the pure
# Python loader: user text may nest deeply, which it reports as RecursionError where libyaml crashes.
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class LabYamlError(ValueError):
    """The topology is unusable; `field` says where (a dotted path), `message` what is wrong."""

    def __init__(self, field_path: str, message: str):
        self.field = field_path
        self.message = message
        super().__init__(f"{field_path}: {message}")


@dataclass(frozen=True)
class PortSpec:
    """One port the lab exposes: its template name, protocol, the tag's original port and node."""

    name: str
    protocol: str
    port: int
    node_id: str
    node_label: str

    @property
    def tag(self) -> str:
        return f"{self.protocol}:{self.port}"

    def as_dict(self) -> dict:
        """The port template entry: the fields in their declared order."""
        return asdict(self)


@dataclass(frozen=True)
class LabAnalysis:
    """What a definition derives from its topology."""

    title: str
    node_count: int
    node_definitions: list[str]
    ports: list[PortSpec] = field(default_factory=list)

    @property
    def port_template(self) -> list[dict]:
        return [p.as_dict() for p in self.ports]


def parse_topology(text: str) -> dict:
    """Parse CML topology text (YAML, or JSON, which is YAML) into a dict with a `nodes` list."""
    if not isinstance(text, str) or not text.strip():
        raise LabYamlError("lab_yaml", "is empty")
    if "\x00" in text:
        raise LabYamlError("lab_yaml", "contains a NUL character")
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise LabYamlError("lab_yaml", "is nested too deeply to parse") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise LabYamlError("lab_yaml", f"is not valid YAML or JSON{where}: {problem}") from None
    if not isinstance(data, dict):
        raise LabYamlError("lab_yaml", "must be a mapping with a 'nodes' list (a CML topology)")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise LabYamlError("lab_yaml.nodes", "must be a non-empty list of nodes")
    return data


class PortTagError(ValueError):
    """A node tag meant as a `protocol:port` tag that names no usable port."""


@dataclass(frozen=True)
class PortTag:
    """The port a `protocol:port` node tag names (protocol lower-cased)."""

    protocol: str
    port: int


def parse_port_tag(tag) -> PortTag | None:
    """The port a node tag names, or None for an ordinary label (`group:core`, `site:paris`).

    Raises PortTagError for a tag that is not a string, a `word:digits` tag whose protocol is not
    one of PORT_PROTOCOLS, a known protocol without a numeric port, or a port outside 1–65535.
    """
    if not isinstance(tag, str):
        raise PortTagError(f"must be a string, got {type(tag).__name__}")
    match = _PORT_TAG.match(tag)
    if not match:
        if ":" in tag and tag.split(":", 1)[0].strip().lower() in PORT_PROTOCOLS:
            raise PortTagError(f"port tag {tag!r} must be 'protocol:port' with a numeric port")
        return None
    protocol, port = match.group(1).lower(), int(match.group(2))
    if protocol not in PORT_PROTOCOLS:
        raise PortTagError(f"unknown protocol {protocol!r} in {tag!r}; known: {', '.join(sorted(PORT_PROTOCOLS))}")
    if not 1 <= port <= _MAX_PORT:
        raise PortTagError(f"port {port} in {tag!r} is outside 1–{_MAX_PORT}")
    return PortTag(protocol, port)


def _port_tags(node: dict, index: int) -> list[tuple[str, int, str]]:
    """`(protocol, port, original tag)` for each port tag of a node; rejects malformed ones."""
    tags = node.get("tags") or []
    if not isinstance(tags, list):
        raise LabYamlError(f"lab_yaml.nodes[{index}].tags", "must be a list of strings")
    found = []
    for t_index, tag in enumerate(tags):
        try:
            parsed = parse_port_tag(tag)
        except PortTagError as exc:
            raise LabYamlError(f"lab_yaml.nodes[{index}].tags[{t_index}]", str(exc)) from None
        if parsed:
            found.append((parsed.protocol, parsed.port, tag))
    return found


def analyze_topology(data: dict) -> LabAnalysis:
    """Derive node count, required node definitions and the port template from a parsed topology."""
    node_definitions = set()
    ports: list[PortSpec] = []
    names: set[str] = set()
    seen_ids: set[str] = set()
    for index, node in enumerate(data["nodes"]):
        if not isinstance(node, dict):
            raise LabYamlError(f"lab_yaml.nodes[{index}]", "must be a mapping")
        node_id = str(node.get("id") or "").strip()
        if not node_id:
            raise LabYamlError(f"lab_yaml.nodes[{index}].id", "is required")
        if node_id in seen_ids:
            raise LabYamlError(f"lab_yaml.nodes[{index}].id", f"duplicate node id {node_id!r}")
        seen_ids.add(node_id)
        node_definition = node.get("node_definition")
        if not isinstance(node_definition, str) or not node_definition.strip():
            raise LabYamlError(f"lab_yaml.nodes[{index}].node_definition", "is required")
        node_definitions.add(node_definition.strip())
        label = str(node.get("label") or node_id).strip()
        for protocol, port, _tag in _port_tags(node, index):
            base = f"{label}_{protocol}"
            name, suffix = base, 2
            while name in names:
                name, suffix = f"{base}_{suffix}", suffix + 1
            names.add(name)
            ports.append(PortSpec(name=name, protocol=protocol, port=port, node_id=node_id, node_label=label))
    lab = data.get("lab") if isinstance(data.get("lab"), dict) else {}
    return LabAnalysis(
        title=str(lab.get("title") or ""),
        node_count=len(data["nodes"]),
        node_definitions=sorted(node_definitions),
        ports=ports,
    )


def analyze_lab_yaml(text: str) -> LabAnalysis:
    """Parse and analyse topology text in one step."""
    return analyze_topology(parse_topology(text))


@functools.lru_cache(maxsize=64)
def _parsed(text: str) -> tuple[dict, "LabAnalysis"]:
    """A definition's topology, parsed and analysed once per process (every instantiation rewrites it)."""
    data = parse_topology(text)
    return data, analyze_topology(data)


def rewrite_ports(text: str, allocation: dict[str, int]) -> str:
    """Return the topology with every port tag, and the smart annotations showing it, set to `allocation`.

    `allocation` maps port template names to the ports allocated on the worker; every
    port of the template must be present. The rest of the topology is unchanged.
    """
    data = rewritten_topology(text, allocation)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=4096)


def rewritten_topology(text: str, allocation: dict[str, int]) -> dict:
    """`rewrite_ports` as data (a fresh dict the caller may keep): what an import sends as JSON."""
    parsed, analysis = _parsed(text)
    data = copy.deepcopy(parsed)
    missing = [p.name for p in analysis.ports if p.name not in allocation]
    if missing:
        raise LabYamlError("allocation", f"no port allocated for {', '.join(missing)}")
    for name, port in allocation.items():
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= _MAX_PORT:
            raise LabYamlError(f"allocation.{name}", f"port {port!r} is not an integer in 1–{_MAX_PORT}")

    by_node: dict[str, list[PortSpec]] = {}
    for spec in analysis.ports:
        by_node.setdefault(spec.node_id, []).append(spec)
    # The old tag text → the new one, for smart annotations (first node wins on a shared tag).
    retag: dict[str, str] = {}
    for index, node in enumerate(data["nodes"]):
        _retag_node(node, index, by_node.get(str(node.get("id")).strip(), []), allocation, retag)
    _retag_annotations(data.get("smart_annotations") or [], retag)
    return data


def _retag_node(node: dict, index: int, specs: list[PortSpec], allocation: dict[str, int], retag: dict) -> None:
    """Set the node's port tags, in order, to the ports allocated for `specs`; note each change in `retag`."""
    port_tags = {tag for _, _, tag in _port_tags(node, index)}
    if not port_tags:
        return
    remaining = iter(specs)
    new_tags = []
    for tag in node.get("tags") or []:
        if tag in port_tags:
            spec = next(remaining)
            new_tag = f"{spec.protocol}:{allocation[spec.name]}"
            retag.setdefault(tag, new_tag)
            new_tags.append(new_tag)
        else:
            new_tags.append(tag)
    node["tags"] = new_tags


def _retag_annotations(annotations: list, retag: dict[str, str]) -> None:
    """Point the smart annotations that showed an old port tag (and their label, when it was the tag) at the new one."""
    for annotation in annotations:
        if not isinstance(annotation, dict):
            continue
        old = annotation.get("tag")
        if isinstance(old, str) and old in retag:
            annotation["tag"] = retag[old]
            if annotation.get("label") == old:
                annotation["label"] = retag[old]
