"""The CML REST views for labs and their nodes, interfaces and links.

Each view takes the simulator, the `SimWorker` addressed and the ids in the URL, after
`api.register_api` has checked the token, applied faults and latency and recorded the time-driven
progress.
"""

from flask import request

from simulators.cml import serialise
from simulators.cml.state import RUNNING_NODE_STATES, CMLError, CMLState, SimWorker, find_lab, find_node
from simulators.cml.topology import NODE_UPDATE_KEYS, create_lab, download_yaml, parse_topology
from simulators.cml.web import body_json, json_response, no_content, query_flag

# -- labs --------------------------------------------------------------------------------


def labs(sim: CMLState, worker: SimWorker):
    return json_response(list(worker.labs))


def import_lab(sim: CMLState, worker: SimWorker):
    title = request.args.get("title")
    if title is not None and not 1 <= len(title) <= 64:
        raise CMLError(400, "Import failed: title must be 1 to 64 characters.")
    lab = create_lab(parse_topology(request.get_data(), sim.node_definitions), title, sim.clock)
    worker.labs[lab.id] = lab
    sim.add_telemetry(worker, "import_lab", {"lab_id": lab.id, "nodes": len(lab.nodes), "links": len(lab.links)})
    sim.add_lab_event(lab, "ADD", "LAB", lab.id, {"title": lab.title})
    return json_response({"id": lab.id, "warnings": []})


def get_lab(sim: CMLState, worker: SimWorker, lab_id):
    return json_response(serialise.lab_json(sim, worker, find_lab(worker, lab_id)))


def delete_lab(sim: CMLState, worker: SimWorker, lab_id):
    lab = find_lab(worker, lab_id)
    state = sim.lab_state(worker, lab)
    if worker.strict_delete and state != "DEFINED_ON_CORE":
        raise CMLError(400, f"Lab {lab_id} is {state}: stop and wipe it before deleting it.")
    del worker.labs[lab_id]
    return no_content()


def lab_state(sim: CMLState, worker: SimWorker, lab_id):
    return json_response(sim.lab_state(worker, find_lab(worker, lab_id)))


def start_lab(sim: CMLState, worker: SimWorker, lab_id):
    lab = find_lab(worker, lab_id)
    starting = [node for node in lab.nodes.values() if node.phase != "RUNNING"]
    if starting:
        sim.check_can_start(worker, lab, len(starting))
        sim.add_telemetry(worker, "start_lab", {"lab_id": lab.id, "nodes": len(starting)})
        sim.start_nodes(worker, lab, starting)
        lab.modified = sim.clock.time()
    lab.phase = "STARTED"
    return no_content()


def stop_lab(sim: CMLState, worker: SimWorker, lab_id):
    lab = find_lab(worker, lab_id)
    if sim.lab_state(worker, lab) == "STARTED":
        sim.add_telemetry(worker, "stop_lab", {"lab_id": lab.id})
        sim.stop_nodes(worker, lab, lab.nodes.values())
        lab.modified = sim.clock.time()
    lab.phase = "STOPPED" if lab.phase == "STARTED" else lab.phase
    return no_content()


def wipe_lab(sim: CMLState, worker: SimWorker, lab_id):
    lab = find_lab(worker, lab_id)
    if sim.lab_state(worker, lab) == "STARTED":
        raise CMLError(400, "The lab must be stopped before it can be wiped.")
    sim.wipe_nodes(worker, lab, lab.nodes.values())
    lab.phase = "DEFINED_ON_CORE"
    lab.modified = sim.clock.time()
    return no_content()


def check_converged(sim: CMLState, worker: SimWorker, lab_id):
    return json_response(sim.converged(worker, find_lab(worker, lab_id)))


def lab_element_state(sim: CMLState, worker: SimWorker, lab_id):
    lab = find_lab(worker, lab_id)
    element = serialise.element_state(sim, worker, lab)
    return json_response(
        {
            "nodes": {node.id: sim.node_state(worker, node)[0] for node in lab.nodes.values()},
            "links": {link_id: element for link_id in lab.links},
            "interfaces": {iface_id: element for iface_id in lab.interfaces},
        }
    )


def simulation_stats(sim: CMLState, worker: SimWorker, lab_id):
    # The spec declares arrays of Node and Link objects (not per-id statistics).
    lab = find_lab(worker, lab_id)
    return json_response(
        {
            "nodes": [serialise.node_json(sim, worker, node, configurations=False) for node in lab.nodes.values()],
            "links": [serialise.link_json(sim, worker, lab, link) for link in lab.links.values()],
        }
    )


def download_lab(sim: CMLState, worker: SimWorker, lab_id):
    # Declared as a JSON string holding the YAML text.
    return json_response(download_yaml(find_lab(worker, lab_id)))


def topology(sim: CMLState, worker: SimWorker, lab_id):
    lab = find_lab(worker, lab_id)
    return json_response(
        serialise.topology_json(sim, worker, lab, configurations=not query_flag("exclude_configurations"))
    )


def lab_events(sim: CMLState, worker: SimWorker, lab_id):
    return json_response(find_lab(worker, lab_id).events)


def layer3_addresses(sim: CMLState, worker: SimWorker, lab_id):
    find_lab(worker, lab_id)
    return json_response({})  # no external connectors, so nothing learned by DHCP


# -- nodes -------------------------------------------------------------------------------


def nodes(sim: CMLState, worker: SimWorker, lab_id):
    lab = find_lab(worker, lab_id)
    if not query_flag("data"):
        return json_response(list(lab.nodes))
    operational = bool(query_flag("operational"))
    configurations = not query_flag("exclude_configurations")
    return json_response(
        [
            serialise.node_json(sim, worker, node, operational=operational, configurations=configurations)
            for node in lab.nodes.values()
        ]
    )


def get_node(sim: CMLState, worker: SimWorker, lab_id, node_id):
    node = find_node(find_lab(worker, lab_id), node_id)
    return json_response(
        serialise.node_json(
            sim,
            worker,
            node,
            operational=bool(query_flag("operational")),
            configurations=not query_flag("exclude_configurations"),
        )
    )


def patch_node(sim: CMLState, worker: SimWorker, lab_id, node_id):
    lab = find_lab(worker, lab_id)
    node = find_node(lab, node_id)
    update = body_json()
    if not isinstance(update, dict):
        raise CMLError(400, "Body must be a NodeUpdate object.")
    unknown = sorted(set(update) - NODE_UPDATE_KEYS)
    if unknown:
        raise CMLError(400, f"Unexpected field(s) {', '.join(unknown)}.")
    if "tags" in update:
        tags = update["tags"]
        if not isinstance(tags, list) or any(not isinstance(t, str) or len(t) > 64 for t in tags):
            raise CMLError(400, "tags must be a list of strings of at most 64 characters.")
        node.tags = list(tags)  # replaced, not merged
    if "label" in update:
        if not isinstance(update["label"], str) or not 1 <= len(update["label"]) <= 128:
            raise CMLError(400, "label must be 1 to 128 characters.")
        node.label = update["label"]
    for axis in ("x", "y"):
        if axis in update:
            setattr(node, axis, int(update[axis]))
    for key in set(update) - {"tags", "label", "x", "y"}:
        node.data[key] = update[key]
    lab.modified = sim.clock.time()
    sim.add_lab_event(lab, "CHANGE", "NODE", node.id, update)
    return json_response(node.id)


def node_state(sim: CMLState, worker: SimWorker, lab_id, node_id):
    state, progress = sim.node_state(worker, find_node(find_lab(worker, lab_id), node_id))
    return json_response({"state": state, "progress": progress})


def start_node(sim: CMLState, worker: SimWorker, lab_id, node_id):
    lab = find_lab(worker, lab_id)
    node = find_node(lab, node_id)
    if node.phase != "RUNNING":
        sim.check_can_start(worker, lab, 1)
        sim.start_nodes(worker, lab, [node])
    return no_content()


def stop_node(sim: CMLState, worker: SimWorker, lab_id, node_id):
    lab = find_lab(worker, lab_id)
    sim.stop_nodes(worker, lab, [find_node(lab, node_id)])
    return no_content()


def wipe_node(sim: CMLState, worker: SimWorker, lab_id, node_id):
    lab = find_lab(worker, lab_id)
    node = find_node(lab, node_id)
    if node.phase == "RUNNING":
        raise CMLError(400, "The node must be stopped before its disks can be wiped.")
    sim.wipe_nodes(worker, lab, [node])
    return no_content()


def extract_node_configuration(sim: CMLState, worker: SimWorker, lab_id, node_id):
    """The running device's configuration becomes the node's stored one (then in `download` and `topology`)."""
    lab = find_lab(worker, lab_id)
    node = find_node(lab, node_id)
    if sim.node_state(worker, node)[0] != "BOOTED":
        raise CMLError(400, f"Node {node_id} is not running: no configuration to extract.")
    if node.running_config is not None:
        node.data["configuration"] = node.running_config
    lab.modified = sim.clock.time()
    sim.add_lab_event(lab, "CHANGE", "NODE", node.id, {"configuration": "extracted"})
    return json_response({"id": node.id, "configuration_extracted": node.running_config is not None})


def node_interfaces(sim: CMLState, worker: SimWorker, lab_id, node_id):
    lab = find_lab(worker, lab_id)
    node = find_node(lab, node_id)
    if not query_flag("data"):
        return json_response(list(node.interfaces))
    operational = bool(query_flag("operational"))
    return json_response(
        [
            serialise.interface_json(sim, worker, lab, lab.interfaces[i], operational=operational)
            for i in node.interfaces
        ]
    )


def console_key(sim: CMLState, worker: SimWorker, lab_id, node_id):
    node = find_node(find_lab(worker, lab_id), node_id)
    if sim.node_state(worker, node)[0] not in RUNNING_NODE_STATES or request.args.get("line", "0") != "0":
        raise CMLError(404, f"No console key for node {node_id}.")
    return json_response(node.console_key)


# -- interfaces and links ----------------------------------------------------------------


def get_interface(sim: CMLState, worker: SimWorker, lab_id, interface_id):
    lab = find_lab(worker, lab_id)
    iface = lab.interfaces.get(interface_id)
    if iface is None:
        raise CMLError(404, f"Interface not found: {interface_id}")
    return json_response(serialise.interface_json(sim, worker, lab, iface, operational=bool(query_flag("operational"))))


def links(sim: CMLState, worker: SimWorker, lab_id):
    lab = find_lab(worker, lab_id)
    if not query_flag("data"):
        return json_response(list(lab.links))
    return json_response([serialise.link_json(sim, worker, lab, link) for link in lab.links.values()])


def get_link(sim: CMLState, worker: SimWorker, lab_id, link_id):
    lab = find_lab(worker, lab_id)
    link = lab.links.get(link_id)
    if link is None:
        raise CMLError(404, f"Link not found: {link_id}")
    return json_response(serialise.link_json(sim, worker, lab, link))
