"""Pure functions over CML lab topologies (YAML or JSON text): parse, analyse, rewrite ports.

A node tag `protocol:port` (e.g. `serial:5041`, `vnc:5044`) marks a port the lab exposes;
each becomes one named port of the definition's port template, `<node label>_<protocol>`
(`ubuntu-desktop_vnc`). When LCM places a lab on a worker, it rewrites those tags, and the
`smart_annotations` that show them, with the ports allocated there.
"""

import copy
import functools
import math
import re
from dataclasses import asdict, dataclass, field

import yaml

from workers.states import PORT_PROTOCOLS

# Anything shaped `word:digits` is meant as a port tag; other tags are ordinary labels.
_PORT_TAG = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_-]*)\s*:\s*([0-9]+)\s*$")
_MAX_PORT = 65535
# Limits at the door (SPEC §12): the topology text (characters), its nodes, how deep it nests, how long a
# number may be written. Real CML topologies stay far below each.
MAX_LAB_YAML = 1_000_000
MAX_NODES = 500
_MAX_DEPTH = 32
_MAX_NUMBER_CHARS = 80
_INT_LIMIT = 2**63  # integers are 64-bit signed, as CML's JSON and PostgreSQL's bigint hold them
_SURROGATE = re.compile("[\ud800-\udfff]")
_YAML = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT = f"{_YAML}str", f"{_YAML}int", f"{_YAML}float"
_PLAIN_TAGS = frozenset(f"{_YAML}{kind}" for kind in ("str", "int", "float", "bool", "null", "seq", "map"))
_TAG_NAMES = {
    f"{_YAML}timestamp": "a date or timestamp (quote it to keep it as text)",
    f"{_YAML}binary": "binary data (!!binary)",
    f"{_YAML}set": "a set (!!set)",
    f"{_YAML}omap": "an ordered map (!!omap)",
    f"{_YAML}pairs": "pairs (!!pairs)",
}
_PLAIN_KINDS = "a CML topology holds only text, numbers, true/false, null, lists and mappings"
# libyaml's emitter when PyYAML has it (the same output, many times faster). Parsing stays on the pure
# Python loader (`_TopologyLoader`).
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class LabYamlError(ValueError):
    """The topology is unusable; `field` says where (a dotted path), `message` what is wrong."""

    def __init__(self, field_path: str, message: str):
        self.field = field_path
        self.message = message
        super().__init__(f"{field_path}: {message}")


def _refused(mark, problem: str) -> LabYamlError:
    return LabYamlError("lab_yaml", f"line {mark.line + 1}, column {mark.column + 1}: {problem}")


def _check_scalar(value, mark) -> None:
    """Refuse a constructed scalar that CML, JSON or PostgreSQL cannot take."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int) and not -_INT_LIMIT <= value < _INT_LIMIT:
        raise _refused(mark, "an integer outside the 64-bit range")
    if isinstance(value, float) and not math.isfinite(value):
        raise _refused(mark, f"{value} is not a finite number")
    if isinstance(value, str) and "\x00" in value:
        raise _refused(mark, "text with a NUL character")
    if isinstance(value, str) and _SURROGATE.search(value):
        raise _refused(mark, "text with a surrogate escape (\\ud800-\\udfff), which is not a Unicode character")


class _TopologyLoader(yaml.SafeLoader):
    """SafeLoader narrowed to what a CML topology holds; each refusal is a LabYamlError naming line and column.

    No aliases: a few hundred bytes of nested aliases expand to gigabytes at instantiation, and CML exports
    never use them. No nesting deeper than _MAX_DEPTH (which also spares the recursive composer). Only plain
    scalars (text, 64-bit integers, finite floats, booleans, null), lists and mappings keyed by text: dates,
    binary, sets and NaN load in Python but break every instantiation, and text with NUL or surrogates
    cannot be stored in PostgreSQL. The pure Python loader, not libyaml's: user text may nest deeply, which
    it reports as RecursionError where libyaml crashes.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _refused(event.start_mark, f"an alias (*{event.anchor}); CML exports use none, write the value out")
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise LabYamlError("lab_yaml", "is nested too deeply to parse")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        if node.tag not in _PLAIN_TAGS:
            raise _refused(node.start_mark, f"{_TAG_NAMES.get(node.tag, f'a value tagged {node.tag}')}; {_PLAIN_KINDS}")
        if not isinstance(node, yaml.ScalarNode):
            return super().construct_object(node, deep)
        if node.tag in (_INT, _FLOAT) and len(node.value) > _MAX_NUMBER_CHARS:
            raise _refused(node.start_mark, f"a number of {len(node.value):,} characters; at most {_MAX_NUMBER_CHARS}")
        try:
            value = super().construct_object(node, deep)
        except (ValueError, KeyError, TypeError):
            kind = node.tag.rsplit(":", 1)[-1]
            raise _refused(node.start_mark, f"{node.value[:40]!r} is not a valid {kind}") from None
        _check_scalar(value, node.start_mark)
        return value

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)  # merge keys (<<) first, so the keys merged in are checked too
        for key_node, _value in node.value:
            if key_node.tag != _STR:
                raise _refused(key_node.start_mark, "a mapping key that is not text (quote it)")
        return super().construct_mapping(node, deep)


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
    """Parse CML topology text (YAML, or JSON, which is YAML) into a dict with a `nodes` list.

    Refuses, as a LabYamlError, what a CML topology never holds and what would cost too much later:
    see `_TopologyLoader` for the values, MAX_LAB_YAML and MAX_NODES for the sizes.
    """
    if not isinstance(text, str) or not text.strip():
        raise LabYamlError("lab_yaml", "is empty")
    if len(text) > MAX_LAB_YAML:
        raise LabYamlError("lab_yaml", f"is {len(text):,} characters long; at most {MAX_LAB_YAML:,}")
    if "\x00" in text:
        raise LabYamlError("lab_yaml", "contains a NUL character")
    if _SURROGATE.search(text):
        raise LabYamlError("lab_yaml", "contains a lone surrogate character (not valid Unicode text)")
    data = _load(text)
    if not isinstance(data, dict):
        raise LabYamlError("lab_yaml", "must be a mapping with a 'nodes' list (a CML topology)")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise LabYamlError("lab_yaml.nodes", "must be a non-empty list of nodes")
    if len(nodes) > MAX_NODES:
        raise LabYamlError("lab_yaml.nodes", f"has {len(nodes)} nodes; at most {MAX_NODES}")
    return data


def _load(text: str):
    loader = None
    try:
        loader = _TopologyLoader(text)  # the reader refuses unprintable characters here already
        return loader.get_single_data()
    except RecursionError:
        raise LabYamlError("lab_yaml", "is nested too deeply to parse") from None
    except yaml.reader.ReaderError as exc:
        line, column = text.count("\n", 0, exc.position) + 1, exc.position - text.rfind("\n", 0, exc.position)
        problem = f"at line {line}, column {column}: unprintable character #x{exc.character:x}"
        raise LabYamlError("lab_yaml", f"is not valid YAML or JSON {problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise LabYamlError("lab_yaml", f"is not valid YAML or JSON{where}: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()


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
