"""The JSON bodies the simulated CML answers with, in the shapes of `cml-2.9-openapi.json`, built from the
state as it is now (each builder takes the simulator for its clock and its state logic)."""

from simulators.cml.state import RUNNING_NODE_STATES, CMLState, SimInterface, SimLab, SimLink, SimNode, SimWorker

SSMS_URL = "https://smartreceiver.cisco.com/licservice/license"
NODE_COUNT_FEATURE = "regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_2607650b-6ca8-46d5-81e5-e6688b7383c4"


def lab_json(sim: CMLState, worker: SimWorker, lab: SimLab) -> dict:
    return {
        "id": lab.id,
        "created": sim.now_iso(lab.created),
        "modified": sim.now_iso(lab.modified),
        "lab_title": lab.title,
        "lab_description": lab.description,
        "lab_notes": lab.notes,
        "owner": worker.user_id,
        "owner_username": worker.username,
        "owner_fullname": "",
        "state": sim.lab_state(worker, lab),
        "node_count": len(lab.nodes),
        "link_count": len(lab.links),
        "groups": [],
        "effective_permissions": ["lab_admin", "lab_edit", "lab_exec", "lab_view"],
    }


def node_json(
    sim: CMLState, worker: SimWorker, node: SimNode, *, operational: bool = False, configurations: bool = True
) -> dict:
    state, progress = sim.node_state(worker, node)
    running = state in RUNNING_NODE_STATES
    data = node.data
    body = {
        "id": node.id,
        "lab_id": node.lab_id,
        "label": node.label,
        "node_definition": node.node_definition,
        "image_definition": data.get("image_definition"),
        "x": node.x,
        "y": node.y,
        "tags": list(node.tags),
        "parameters": data.get("parameters") or {},
        "ram": data.get("ram"),
        "cpus": data.get("cpus"),
        "cpu_limit": data.get("cpu_limit"),
        "data_volume": data.get("data_volume"),
        "boot_disk_size": data.get("boot_disk_size"),
        "hide_links": data.get("hide_links", False),
        "pinned_compute_id": data.get("pinned_compute_id"),
        "resource_pool": None,
        "state": state,
        "boot_progress": progress,
        "compute_id": worker.compute_id if running else None,
        "vnc_key": node.vnc_key if running else None,
        "serial_consoles": (
            [{"console_key": node.console_key, "label": "Console 0", "device_number": 0}] if running else []
        ),
    }
    if configurations:
        body["configuration"] = data.get("configuration")
    if operational:
        body["operational"] = _node_operational(worker, node, running, body["serial_consoles"])
    return body


def _node_operational(worker: SimWorker, node: SimNode, running: bool, serial_consoles: list) -> dict:
    data = node.data
    return {
        "boot_disk_size": data.get("boot_disk_size"),
        "cpu_limit": data.get("cpu_limit") or 100,
        "cpus": data.get("cpus") or 1,
        "data_volume": data.get("data_volume"),
        "ram": data.get("ram") or 512,
        "compute_id": worker.compute_id if running else None,
        "image_definition": data.get("image_definition"),
        "vnc_key": node.vnc_key if running else None,
        "resource_pool": None,
        "iol_app_id": None,
        "serial_consoles": serial_consoles,
    }


def element_state(sim: CMLState, worker: SimWorker, lab: SimLab) -> str:
    """Links and interfaces follow the lab."""
    return sim.lab_state(worker, lab)


def interface_json(sim: CMLState, worker: SimWorker, lab: SimLab, iface: SimInterface, *, operational=False) -> dict:
    connected = any(iface.id in (link.interface_a, link.interface_b) for link in lab.links.values())
    body = {
        "id": iface.id,
        "lab_id": lab.id,
        "node": iface.node_id,
        "label": iface.label,
        "type": iface.type,
        "slot": iface.slot,
        "mac_address": iface.mac_address,
        "is_connected": connected,
        "state": element_state(sim, worker, lab),
    }
    if operational:
        body["operational"] = {
            "mac_address": iface.mac_address,
            "src_udp_port": None,
            "dst_udp_port": None,
            "device_name": None,
        }
    return body


def link_json(sim: CMLState, worker: SimWorker, lab: SimLab, link: SimLink) -> dict:
    body = {
        "id": link.id,
        "lab_id": lab.id,
        "interface_a": link.interface_a,
        "interface_b": link.interface_b,
        "node_a": link.node_a,
        "node_b": link.node_b,
        "state": element_state(sim, worker, lab),
        "link_capture_key": link.capture_key,
    }
    if link.label:
        body["label"] = link.label
    return body


def topology_json(sim: CMLState, worker: SimWorker, lab: SimLab, *, configurations: bool = True) -> dict:
    nodes = []
    for node in lab.nodes.values():
        item = {
            "id": node.id,
            "label": node.label,
            "node_definition": node.node_definition,
            "x": node.x,
            "y": node.y,
            "tags": list(node.tags),
            "interfaces": [
                {
                    "id": iface.id,
                    "node": node.id,
                    "label": iface.label,
                    "type": iface.type,
                    "slot": iface.slot,
                    "mac_address": iface.mac_address,
                }
                for iface in (lab.interfaces[i] for i in node.interfaces)
            ],
        }
        item |= {k: v for k, v in node.data.items() if k != "pinned_compute_id"}
        if not configurations:
            item.pop("configuration", None)
        nodes.append(item)
    links = [link_json(sim, worker, lab, link) | {"conditioning": link.conditioning} for link in lab.links.values()]
    return {
        "lab": {
            "version": lab.version,
            "title": lab.title,
            "description": lab.description,
            "notes": lab.notes,
            "owner": worker.user_id,
        },
        "nodes": nodes,
        "links": links,
        "annotations": lab.annotations,
        "smart_annotations": lab.smart_annotations,
    }


def system_stats(sim: CMLState, worker: SimWorker) -> dict:
    running = sim.running_nodes(worker)
    total_nodes = sum(len(lab.nodes) for lab in worker.labs.values())
    allocated_cpus = sum(node.data.get("cpus") or 1 for node in running)
    allocated_memory = sum(node.data.get("ram") or 512 for node in running)  # MiB
    used_memory = min(worker.memory_total, 4 * 1024**3 + allocated_memory * 1024**2)
    used_disk = min(worker.disk_total, 40 * 1024**3 + total_nodes * 2 * 1024**3)
    percent = min(100.0, 2.0 + 6.5 * len(running))
    memory = {"used": used_memory, "free": worker.memory_total - used_memory, "total": worker.memory_total}
    disk = {"used": used_disk, "free": worker.disk_total - used_disk, "total": worker.disk_total}
    load = round(percent * worker.cpu_count / 100, 2)
    return {
        "computes": {
            worker.compute_id: {
                "hostname": worker.hostname,
                "is_controller": True,
                "stats": {
                    "cpu": {
                        "count": worker.cpu_count,
                        "percent": percent,
                        "model": "Simulated x86_64 CPU",
                        "predicted": allocated_cpus,
                        "load": [load, load, load],
                    },
                    "memory": memory,
                    "disk": disk,
                    "dominfo": {
                        "allocated_cpus": allocated_cpus,
                        "allocated_memory": allocated_memory,
                        "total_nodes": total_nodes,
                        "total_orphans": 0,
                        "running_nodes": len(running),
                        "running_orphans": 0,
                    },
                },
            }
        },
        "all": {"cpu": {"count": worker.cpu_count, "percent": percent}, "memory": memory, "disk": disk},
        "controller": {"disk": disk},
    }


def licensing_json(sim: CMLState, worker: SimWorker) -> dict:
    licence = worker.licence
    registered = licence.status == "COMPLETED"
    expires = _at(sim, licence.succeeded_at + 365 * 86400) if registered and licence.succeeded_at else None
    return {
        "udi": {"hostname": worker.hostname, "product_uuid": worker.product_uuid},
        "registration": {
            "status": licence.status,
            "smart_account": "LCM Simulated Account" if registered else None,
            "virtual_account": "Default" if registered else None,
            "register_time": _time_info(
                sim,
                licence.succeeded_at,
                licence.attempted_at,
                licence.status if licence.attempted_at else None,
                licence.failure,
            ),
            "renew_time": _time_info(sim),
            "expires": expires,
        },
        "authorization": {
            "status": "IN_COMPLIANCE" if registered else "EVAL",
            "renew_time": _time_info(sim),
            "expires": expires,
        },
        "reservation_mode": False,
        "features": [
            {
                "id": NODE_COUNT_FEATURE,
                "name": "CML - Expansion Nodes",
                "description": "Cisco Modeling Labs - Expansion Nodes",
                "version": "1.0",
                "in_use": len(sim.running_nodes(worker)),
                "status": "IN_COMPLIANCE" if registered else "INIT",
                "min": 0,
                "max": worker.node_limit if worker.node_limit is not None else 300,
                "minEndDate": None,
                "maxEndDate": None,
            }
        ],
        "product_license": {"active": "CML_Enterprise", "is_enterprise": True},
        "transport": {
            "proxy": {"server": None, "port": None},
            "ssms": SSMS_URL,
            "default_ssms": SSMS_URL,
        },
    }


def _at(sim: CMLState, value: float | None) -> str | None:
    return sim.now_iso(value) if value is not None else None


def _time_info(sim: CMLState, succeeded=None, attempted=None, status=None, failure=None) -> dict:
    return {
        "succeeded": _at(sim, succeeded),
        "attempted": _at(sim, attempted),
        "scheduled": None,
        "status": status,
        "failure": failure,
        "success": "SUCCEEDED" if succeeded is not None else None,
    }


def compute_health(sim: CMLState, worker: SimWorker) -> dict:
    ready = sim.is_ready(worker)
    return {
        "kvm_vmx_enabled": True,
        "enough_cpus": True,
        "lld_connected": ready,
        "lld_synced": ready,
        "libvirt": True,
        "fabric": ready,
        "device_mux": ready,
        "refplat_images_available": True,
        "docker_shim": True,
        "valid": ready,
        "admission_state": "READY" if ready else "REGISTERED",
        "is_controller": True,
        "hostname": worker.hostname,
    }


def worker_summary(sim: CMLState, worker: SimWorker) -> dict:
    return {
        "name": worker.name,
        "ready": sim.is_ready(worker),
        "down": worker.down,
        "licence": worker.licence.status,
        "timings": worker.timings,
        "strict_delete": worker.strict_delete,
        "node_limit": worker.node_limit,
        "labs": {
            lab.id: {
                "title": lab.title,
                "state": sim.lab_state(worker, lab),
                "nodes": {node.id: sim.node_state(worker, node)[0] for node in lab.nodes.values()},
            }
            for lab in worker.labs.values()
        },
    }
