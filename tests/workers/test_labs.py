"""The lab reconciler (`workers/labs.py`), one step per test, against the CML simulator over HTTP.

The CML simulator runs in this process at zero delay (one per module); each test gets its own virtual
CML and a worker whose `cml_base_url` points at it. Node boot delays, where a test needs them, are the
virtual CML's own timings, and time moves with the simulator's clock, never with sleeps.

LabRecord keeps no history table: its history is the change stream `lab_record_create` and
`lab_record_transition` publish (`lcm.events.publish_change`), which the `changes` fixture records.
"""

import uuid

import pytest

from lcm import http
from sessions.labyaml import rewritten_topology
from tests.factories import DEMO_LAB, DefinitionFactory, LabRecordFactory, SessionFactory, WorkerFactory
from tests.support.simulators import running_simulators, sim_control
from workers import labs
from workers.clients.cml import cml_client_for
from workers.models import LabRecord, Port
from workers.port_services import ports_allocate
from workers.states import LabStatus as L

pytestmark = pytest.mark.django_db

ACTOR = "lab-test"
DEMO_PORTS = ["edge-router_serial", "workstation_serial", "workstation_vnc"]  # the demo lab's port template


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cml_url():
    with running_simulators(cml_port=0, zero_delay=True, only=["cml"]) as handle:
        yield handle.urls["cml"]


@pytest.fixture
def make_worker(cml_url, settings):
    """`make_worker(**timings)`: a RUNNING worker backed by a fresh virtual CML (its own node timings)."""
    settings.LCM_HTTP_READ_TIMEOUT = 5.0
    settings.LCM_HTTP_RETRIES = 1

    def make(**timings):
        name = f"labs-{uuid.uuid4().hex[:10]}"
        answer = sim_control.post(f"{cml_url}/_sim/workers", json={"name": name, "timings": timings}, timeout=5).json()
        settings.LCM_CML_USERNAME = answer["username"]
        settings.LCM_CML_PASSWORD = answer["password"]
        return WorkerFactory(name=name, cml_base_url=answer["base_url"])

    return make


@pytest.fixture
def worker(make_worker):
    return make_worker()


@pytest.fixture
def cml(worker):
    return cml_client_for(worker)


@pytest.fixture
def definition():
    return DefinitionFactory(lab_reuse_enabled=True)


@pytest.fixture
def changes(monkeypatch):
    """Every lab record change published (the record's history): dicts of id, from, to, actor, reason."""
    import workers.services

    seen = []
    original = workers.services.publish_change

    def spy(entity, obj_id, from_status, to_status, *, actor, reason=""):
        if entity == "lab_record":
            seen.append({"id": obj_id, "from": from_status, "to": to_status, "actor": actor, "reason": reason})
        return original(entity, obj_id, from_status, to_status, actor=actor, reason=reason)

    monkeypatch.setattr(workers.services, "publish_change", spy)
    return seen


# --- helpers --------------------------------------------------------------------------------------


def fresh(lab) -> LabRecord:
    return LabRecord.objects.get(pk=lab.pk)


def moves(changes, lab) -> list[tuple[str, str]]:
    """The (from, to) steps published for `lab`, each checked to carry this module's actor."""
    mine = [c for c in changes if c["id"] == lab.pk]
    assert all(c["actor"] == ACTOR for c in mine), mine
    return [(c["from"], c["to"]) for c in mine]


def lab_titled(cml, title) -> list[str]:
    return [lab_id for lab_id in cml.labs(show_all=True) if cml.get_lab(lab_id)["lab_title"] == title]


def demo_topology(ports: dict[str, int]) -> dict:
    return rewritten_topology(DEMO_LAB, ports)


def imported_lab(cml, *, title="someone's lab", state="DEFINED_ON_CORE", ports=None) -> str:
    """A lab made directly in CML (not through LCM) in `state`."""
    ports = ports or {"edge-router_serial": 7001, "workstation_serial": 7002, "workstation_vnc": 7003}
    lab_id = cml.import_lab(demo_topology(ports), title=title)
    if state in ("STARTED", "STOPPED"):
        cml.start_lab(lab_id)
    if state == "STOPPED":
        cml.stop_lab(lab_id)
    assert cml.lab_state(lab_id) == state
    return lab_id


def new_record(worker, definition, session=None) -> tuple[LabRecord, dict]:
    return labs.new_lab(session or SessionFactory(definition=definition), definition, worker, actor=ACTOR)


def lost_import(cml, lab, ports) -> str:
    """What a pass that died right after sending an import leaves: the mark that it was sent, a lab in CML
    under the record's title, and no CML id on the record."""
    labs._mark_import_sent(lab)
    return cml.import_lab(demo_topology(ports), title=labs.lab_title(lab.pk))


def wiped_record(worker, definition, *, cml_lab_id="", session=None) -> LabRecord:
    """A WIPED record of `definition` on `worker` holding the definition's ports (bound to `session`)."""
    lab = LabRecordFactory(
        worker=worker,
        definition=definition,
        status=L.WIPED,
        cml_lab_id=cml_lab_id or str(uuid.uuid4()),  # a CML lab id that names no lab
        active_session=session,
    )
    ports_allocate(lab, definition.port_names)
    return lab


def booted_record(worker, definition, cml) -> tuple[LabRecord, dict]:
    lab, ports = new_record(worker, definition)
    lab = labs.boot(lab, cml, worker, topology=lambda: demo_topology(ports), actor=ACTOR)
    assert lab.status == L.BOOTED
    return lab, ports


def no_cml():
    raise AssertionError("CML was not to be asked")


# --- titles ---------------------------------------------------------------------------------------


def test_lab_title_and_record_id_of_round_trip():
    pk = uuid.uuid4()
    assert labs.lab_title(pk) == f"lcm-{pk}"
    assert labs.record_id_of(labs.lab_title(pk)) == pk
    assert labs.record_id_of(labs.lab_title(str(pk))) == pk


@pytest.mark.parametrize(
    "title", ["", "demo", "lcm-", "lcm-not-a-uuid", f"LCM-{uuid.uuid4()}", f"x-lcm-{uuid.uuid4()}", "lcm demo lab"]
)
def test_record_id_of_a_title_lcm_did_not_give_is_none(title):
    assert labs.record_id_of(title) is None


# --- choosing a session's lab ---------------------------------------------------------------------


def test_prepare_binds_a_wiped_unbound_lab_of_the_definition_and_returns_its_ports(worker, definition, changes):
    wiped = wiped_record(worker, definition)
    session = SessionFactory(definition=definition)

    lab, ports = labs.prepare(session, definition, worker, actor=ACTOR)

    assert lab.pk == wiped.pk
    assert fresh(lab).active_session_id == session.pk
    assert ports == wiped.ports and sorted(ports) == sorted(DEMO_PORTS)
    assert LabRecord.objects.filter(worker=worker).count() == 1
    assert changes == []  # binding is not a status change


def test_prepare_makes_a_new_importing_record_with_ports_when_no_lab_is_reusable(worker, definition, changes):
    session = SessionFactory(definition=definition)

    lab, ports = labs.prepare(session, definition, worker, actor=ACTOR)

    lab = fresh(lab)
    assert lab.status == L.IMPORTING
    assert lab.title == labs.lab_title(lab.pk)
    assert lab.active_session_id == session.pk and lab.worker_id == worker.pk and lab.definition_id == definition.pk
    assert lab.node_count == definition.node_count and lab.cml_lab_id == ""
    assert sorted(ports) == sorted(DEMO_PORTS) and len(set(ports.values())) == len(DEMO_PORTS)
    assert lab.ports == ports
    assert all(worker.port_range_start <= p <= worker.port_range_end for p in ports.values())
    assert moves(changes, lab) == [("", L.IMPORTING)]


def test_prepare_ignores_wiped_labs_when_the_definition_does_not_reuse_labs(worker):
    definition = DefinitionFactory(lab_reuse_enabled=False)
    wiped = wiped_record(worker, definition)
    session = SessionFactory(definition=definition)

    lab, ports = labs.prepare(session, definition, worker, actor=ACTOR)

    assert lab.pk != wiped.pk and lab.status == L.IMPORTING
    assert fresh(wiped).active_session_id is None
    assert not set(ports.values()) & set(wiped.ports.values())


def test_bind_wiped_lab_skips_a_lab_bound_to_another_session(worker, definition):
    other = SessionFactory(definition=definition)
    taken = wiped_record(worker, definition, session=other)
    session = SessionFactory(definition=definition)

    assert labs.bind_wiped_lab(session, definition, worker) is None
    assert fresh(taken).active_session_id == other.pk

    free = wiped_record(worker, definition)
    assert labs.bind_wiped_lab(session, definition, worker).pk == free.pk
    assert fresh(taken).active_session_id == other.pk


def test_bind_wiped_lab_lets_go_of_another_lab_still_bound_to_the_same_session(worker, definition):
    session = SessionFactory(definition=definition)
    stale = LabRecordFactory(worker=worker, definition=definition, status=L.IMPORTING, active_session=session)
    wiped = wiped_record(worker, definition)

    lab = labs.bind_wiped_lab(session, definition, worker)

    assert lab.pk == wiped.pk and fresh(wiped).active_session_id == session.pk
    assert fresh(stale).active_session_id is None


def test_bind_wiped_lab_keeps_a_lab_already_bound_to_the_same_session(worker, definition):
    """A pass that crashed after binding a lab finds it again (it counts though it is not free)."""
    session = SessionFactory(definition=definition)
    mine = wiped_record(worker, definition, session=session)  # the oldest: the one chosen
    free = wiped_record(worker, definition)

    assert labs.bind_wiped_lab(session, definition, worker).pk == mine.pk
    assert list(LabRecord.objects.filter(active_session=session)) == [mine]
    assert fresh(free).active_session_id is None


@pytest.mark.parametrize("state", ["DEFINED_ON_CORE", "STOPPED"])
def test_still_reusable_when_the_wiped_lab_is_defined_or_stopped_in_cml(worker, definition, cml, changes, state):
    session = SessionFactory(definition=definition)
    lab = wiped_record(worker, definition, cml_lab_id=imported_lab(cml, state=state), session=session)

    assert labs.still_reusable(lab, cml, actor=ACTOR) is True
    lab = fresh(lab)
    assert lab.status == L.WIPED and lab.active_session_id == session.pk
    assert changes == []


def test_still_reusable_marks_a_lab_gone_from_cml_orphaned_then_deleted(worker, definition, cml, changes):
    session = SessionFactory(definition=definition)
    lab = wiped_record(worker, definition, cml_lab_id=str(uuid.uuid4()), session=session)

    assert labs.still_reusable(lab, cml, actor=ACTOR) is False
    lab = fresh(lab)
    assert lab.status == L.DELETED and lab.active_session_id is None and lab.ports == {}
    assert moves(changes, lab) == [(L.WIPED, L.ORPHANED), (L.ORPHANED, L.DELETED)]


def test_still_reusable_marks_a_started_lab_error_and_unbinds_it(worker, definition, cml, changes):
    session = SessionFactory(definition=definition)
    lab = wiped_record(worker, definition, cml_lab_id=imported_lab(cml, state="STARTED"), session=session)

    assert labs.still_reusable(lab, cml, actor=ACTOR) is False
    lab = fresh(lab)
    assert lab.status == L.ERROR and lab.cml_state == "STARTED" and lab.active_session_id is None
    assert moves(changes, lab) == [(L.WIPED, L.ERROR)]


def test_claim_reusable_passes_over_labs_that_did_not_survive_in_cml(worker, definition, cml):
    session = SessionFactory(definition=definition)
    gone = wiped_record(worker, definition)
    started = wiped_record(worker, definition, cml_lab_id=imported_lab(cml, state="STARTED"))
    good = wiped_record(worker, definition, cml_lab_id=imported_lab(cml, state="DEFINED_ON_CORE"))

    assert labs.claim_reusable(session, definition, worker, cml, actor=ACTOR).pk == good.pk
    assert fresh(gone).status == L.DELETED and fresh(started).status == L.ERROR
    assert fresh(good).active_session_id == session.pk


def test_find_by_title_finds_an_unrecorded_lab_and_ignores_recorded_ones(worker, cml):
    title = labs.lab_title(uuid.uuid4())
    recorded = imported_lab(cml, title=title)
    LabRecordFactory(worker=worker, cml_lab_id=recorded, title=title)
    assert labs.find_by_title(cml, title, worker) is None

    unrecorded = imported_lab(cml, title=title)
    imported_lab(cml, title="another title")
    assert labs.find_by_title(cml, title, worker) == unrecorded
    assert labs.find_by_title(cml, "no such title", worker) is None


# --- boot -------------------------------------------------------------------------------------------


def test_boot_imports_starts_and_records_booted_in_one_call(worker, definition, cml, changes):
    lab, ports = new_record(worker, definition)

    lab = labs.boot(lab, cml, worker, topology=lambda: demo_topology(ports), actor=ACTOR)

    assert lab.status == L.BOOTED and fresh(lab).status == L.BOOTED
    assert lab.cml_state == "STARTED" and lab.last_synced_at is not None
    assert lab_titled(cml, labs.lab_title(lab.pk)) == [lab.cml_lab_id]
    assert cml.lab_state(lab.cml_lab_id) == "STARTED" and cml.check_converged(lab.cml_lab_id)
    tags = {node["label"]: node["tags"] for node in cml.nodes(lab.cml_lab_id)}
    assert f"serial:{ports['edge-router_serial']}" in tags["edge-router"]
    assert {f"serial:{ports['workstation_serial']}", f"vnc:{ports['workstation_vnc']}"} <= set(tags["workstation"])
    assert "serial:7001" not in tags["edge-router"]
    assert moves(changes, lab) == [
        ("", L.IMPORTING),
        (L.IMPORTING, L.DEFINED),
        (L.DEFINED, L.STARTING),
        (L.STARTING, L.BOOTED),
    ]


def test_boot_waits_in_starting_while_nodes_boot_then_records_booted(make_worker, cml_url, definition, changes):
    worker = make_worker(node_boot=60)
    cml = cml_client_for(worker)
    lab, ports = new_record(worker, definition)
    topology = lambda: demo_topology(ports)  # noqa: E731

    lab = labs.boot(lab, cml, worker, topology=topology, actor=ACTOR)
    assert lab.status == L.STARTING and lab.cml_lab_id and fresh(lab).status == L.STARTING

    again = labs.boot(fresh(lab), cml, worker, topology=topology, actor=ACTOR)
    assert again.status == L.STARTING  # still booting: nothing new

    sim_control.post(f"{cml_url}/_sim/clock", json={"advance": 61}, timeout=5).raise_for_status()
    lab = labs.boot(fresh(lab), cml, worker, topology=topology, actor=ACTOR)
    assert lab.status == L.BOOTED
    assert lab_titled(cml, labs.lab_title(lab.pk)) == [lab.cml_lab_id]  # imported once
    assert moves(changes, lab)[-2:] == [(L.DEFINED, L.STARTING), (L.STARTING, L.BOOTED)]


def test_boot_finds_a_lost_import_by_its_title_and_does_not_import_twice(worker, definition, cml, changes):
    lab, ports = new_record(worker, definition)
    lost = lost_import(cml, lab, ports)  # the answer never got recorded
    assert fresh(lab).status == L.IMPORTING and fresh(lab).cml_lab_id == ""

    def topology():
        raise AssertionError("a lost import was imported again")

    lab = labs.boot(fresh(lab), cml, worker, topology=topology, actor=ACTOR)

    assert lab.status == L.BOOTED and lab.cml_lab_id == lost
    assert lab_titled(cml, labs.lab_title(lab.pk)) == [lost]
    assert len(cml.labs(show_all=True)) == 1
    found = [c for c in changes if c["id"] == lab.pk and c["to"] == L.DEFINED]
    assert found and found[0]["reason"] == "found after lost import" and found[0]["actor"] == ACTOR


def test_a_record_that_never_sent_an_import_is_not_searched_for_in_cml(worker, definition, cml, monkeypatch):
    lab, ports = new_record(worker, definition)
    monkeypatch.setattr(labs, "find_by_title", lambda *a: pytest.fail("searched CML for an import never sent"))

    lab = labs.boot(fresh(lab), cml, worker, topology=lambda: demo_topology(ports), actor=ACTOR)

    assert lab.status == L.BOOTED and fresh(lab).import_sent_at is not None
    assert lab_titled(cml, labs.lab_title(lab.pk)) == [lab.cml_lab_id]


def test_boot_restarts_a_wiped_lab_without_importing(worker, definition, cml):
    lab_id = imported_lab(cml, state="DEFINED_ON_CORE")
    lab = wiped_record(worker, definition, cml_lab_id=lab_id)

    lab = labs.boot(lab, cml, worker, topology=no_cml, actor=ACTOR)

    assert lab.status == L.BOOTED and lab.cml_lab_id == lab_id
    assert cml.labs(show_all=True) == [lab_id]


@pytest.mark.parametrize("status", [L.STOPPING, L.WIPING, L.ERROR, L.ORPHANED, L.DELETING])
def test_boot_refuses_a_lab_in_an_unexpected_state(worker, definition, cml, status):
    lab = LabRecordFactory(worker=worker, definition=definition, status=status, cml_lab_id=imported_lab(cml))

    with pytest.raises(http.ExternalError) as raised:
        labs.boot(lab, cml, worker, topology=no_cml, actor=ACTOR)

    assert status in raised.value.detail
    assert fresh(lab).status == status


# --- tear down ------------------------------------------------------------------------------------


@pytest.mark.parametrize("delete", [False, True])
def test_tear_down_stops_a_booted_lab_then_wipes_or_deletes_it(worker, definition, cml, changes, delete):
    lab, ports = booted_record(worker, definition, cml)
    LabRecord.objects.filter(pk=lab.pk).update(active_session=SessionFactory(definition=definition))
    changes.clear()

    waiting = labs.tear_down(fresh(lab), lambda: cml, worker, delete=delete, actor=ACTOR)
    assert waiting == "stopping lab"
    assert fresh(lab).status == L.STOPPING and cml.lab_state(lab.cml_lab_id) == "STOPPED"

    assert labs.tear_down(fresh(lab), lambda: cml, worker, delete=delete, actor=ACTOR) is None
    done = fresh(lab)
    assert done.active_session_id is None
    if delete:
        assert done.status == L.DELETED
        assert done.ports == {} and not Port.objects.filter(worker=worker).exists()
        assert cml.labs(show_all=True) == []
        tail = [(L.STOPPED, L.DELETING), (L.DELETING, L.DELETED)]
    else:
        assert done.status == L.WIPED and done.cml_state == "DEFINED_ON_CORE"
        assert done.ports == ports  # kept for the next session
        assert cml.lab_state(lab.cml_lab_id) == "DEFINED_ON_CORE"
        tail = [(L.STOPPED, L.WIPING), (L.WIPING, L.WIPED)]
    assert moves(changes, lab) == [(L.BOOTED, L.STOPPING), (L.STOPPING, L.STOPPED), *tail]


def test_tear_down_of_a_wiped_bound_lab_only_unbinds_it(worker, definition, changes):
    session = SessionFactory(definition=definition)
    lab = wiped_record(worker, definition, session=session)

    assert labs.tear_down(lab, no_cml, worker, delete=False, actor=ACTOR) is None

    lab = fresh(lab)
    assert lab.status == L.WIPED and lab.active_session_id is None and sorted(lab.ports) == sorted(DEMO_PORTS)
    assert changes == []


def test_tear_down_with_delete_of_a_wiped_lab_deletes_it(worker, definition, cml):
    session = SessionFactory(definition=definition)
    lab = wiped_record(worker, definition, cml_lab_id=imported_lab(cml), session=session)

    assert labs.tear_down(lab, lambda: cml, worker, delete=True, actor=ACTOR) is None

    assert fresh(lab).status == L.DELETED


def test_tear_down_of_an_importing_record_with_no_cml_lab_deletes_it_never_imported(worker, definition, cml, changes):
    lab, _ = new_record(worker, definition)
    imported_lab(cml, title="not this one")

    assert labs.tear_down(fresh(lab), lambda: cml, worker, delete=False, actor=ACTOR) is None

    lab = fresh(lab)
    assert lab.status == L.DELETED and lab.ports == {} and lab.active_session_id is None
    last = [c for c in changes if c["id"] == lab.pk][-1]
    assert (last["from"], last["to"], last["reason"], last["actor"]) == (
        L.IMPORTING,
        L.DELETED,
        "never imported",
        ACTOR,
    )


def test_tear_down_of_a_lost_import_finds_it_by_title_and_deletes_it(worker, definition, cml):
    lab, ports = new_record(worker, definition)
    lost = lost_import(cml, lab, ports)

    assert labs.tear_down(fresh(lab), lambda: cml, worker, delete=True, actor=ACTOR) is None

    lab = fresh(lab)
    assert lab.status == L.DELETED and lab.cml_lab_id == lost
    assert cml.labs(show_all=True) == []


def test_tear_down_of_a_lab_gone_from_cml_goes_orphaned_then_deleted(worker, definition, cml, cml_url, changes):
    lab, _ = booted_record(worker, definition, cml)
    sim_control.delete(f"{cml_url}/_sim/workers/{worker.name}/labs/{lab.cml_lab_id}", timeout=5).raise_for_status()
    changes.clear()

    assert labs.tear_down(fresh(lab), lambda: cml, worker, delete=False, actor=ACTOR) is None

    lab = fresh(lab)
    assert lab.status == L.DELETED and lab.ports == {} and lab.cml_state == ""
    assert moves(changes, lab) == [(L.BOOTED, L.ORPHANED), (L.ORPHANED, L.DELETED)]


# --- discovery --------------------------------------------------------------------------------------


def test_sync_labs_records_an_unknown_lab_orphaned_with_its_ports_reserved(worker, cml, changes):
    lab_id = imported_lab(
        cml,
        title="made by hand",
        ports={"edge-router_serial": 4101, "workstation_serial": 4102, "workstation_vnc": 4103},
    )

    labs.sync_labs(worker, cml, actor=ACTOR)

    lab = LabRecord.objects.get(worker=worker, cml_lab_id=lab_id)
    assert lab.status == L.ORPHANED and lab.title == "made by hand" and lab.cml_state == "DEFINED_ON_CORE"
    assert lab.node_count == 2 and lab.active_session_id is None
    assert lab.ports == {"edge-router_serial": 4101, "workstation_serial": 4102, "workstation_vnc": 4103}
    assert moves(changes, lab) == [("", L.ORPHANED)]

    labs.sync_labs(worker, cml, actor=ACTOR)  # known now: recorded once
    assert LabRecord.objects.filter(worker=worker).count() == 1


def test_sync_labs_does_not_record_a_lab_being_imported(worker, definition, cml):
    lab, ports = new_record(worker, definition)
    cml.import_lab(demo_topology(ports), title=labs.lab_title(lab.pk))  # the import's answer not recorded yet

    labs.sync_labs(worker, cml, actor=ACTOR)

    assert list(LabRecord.objects.filter(worker=worker).values_list("pk", flat=True)) == [lab.pk]
    assert fresh(lab).status == L.IMPORTING and fresh(lab).ports == ports


def test_sync_labs_records_a_late_import_of_a_deleted_record(worker, definition, cml):
    lab, ports = new_record(worker, definition)
    assert labs.tear_down(fresh(lab), lambda: cml, worker, delete=True, actor=ACTOR) is None  # "never imported"
    late = cml.import_lab(demo_topology(ports), title=labs.lab_title(lab.pk))  # the import lands afterwards

    labs.sync_labs(worker, cml, actor=ACTOR)

    assert LabRecord.objects.filter(worker=worker, cml_lab_id=late).exists()


def test_sync_labs_deletes_a_recorded_lab_deleted_behind_lcms_back(worker, definition, cml, cml_url, changes):
    lab, _ = booted_record(worker, definition, cml)
    kept, kept_ports = booted_record(worker, definition, cml)
    sim_control.delete(f"{cml_url}/_sim/workers/{worker.name}/labs/{lab.cml_lab_id}", timeout=5).raise_for_status()
    changes.clear()

    labs.sync_labs(worker, cml, actor=ACTOR)

    lab = fresh(lab)
    assert lab.status == L.DELETED and lab.ports == {} and lab.cml_state == ""
    assert moves(changes, lab) == [(L.BOOTED, L.ORPHANED), (L.ORPHANED, L.DELETED)]
    assert fresh(kept).status == L.BOOTED and fresh(kept).ports == kept_ports
    assert LabRecord.objects.filter(worker=worker).count() == 2


def test_release_worker_labs_deletes_every_record_of_the_worker_only(definition, changes):
    worker, other = WorkerFactory(), WorkerFactory()
    statuses = [L.IMPORTING, L.BOOTED, L.WIPED, L.STOPPING, L.ERROR, L.ORPHANED, L.DELETED]
    mine = [LabRecordFactory(worker=worker, definition=definition, status=s) for s in statuses]
    for lab in mine[:-1]:
        ports_allocate(lab, definition.port_names)
    theirs = LabRecordFactory(worker=other, definition=definition, status=L.BOOTED)
    their_ports = ports_allocate(theirs, definition.port_names)

    labs.release_worker_labs(worker, actor=ACTOR, reason="worker terminated")

    assert set(LabRecord.objects.filter(worker=worker).values_list("status", flat=True)) == {L.DELETED}
    assert not Port.objects.filter(worker=worker).exists()
    assert fresh(theirs).status == L.BOOTED and fresh(theirs).ports == their_ports
    assert all(c["actor"] == ACTOR and c["reason"] == "worker terminated" for c in changes)
    assert {c["id"] for c in changes} == {lab.pk for lab in mine[:-1]}
    assert moves(changes, mine[1]) == [(L.BOOTED, L.ORPHANED), (L.ORPHANED, L.DELETED)]
    assert moves(changes, mine[5]) == [(L.ORPHANED, L.DELETED)]


# --- observed: still running (drift, SPEC §11) ----------------------------------------------------------


def _booted_for(worker, definition, cml, status="READY"):
    session = SessionFactory(definition=definition, worker=worker, status=status)
    lab, ports = new_record(worker, definition, session)
    lab = labs.boot(lab, cml, worker, topology=lambda: demo_topology(ports), actor=ACTOR)
    return lab, ports


def test_a_vanished_lab_of_a_ready_session_keeps_its_record_and_ports_for_a_fresh_import(
    worker, definition, cml, cml_url, changes
):
    lab, ports = _booted_for(worker, definition, cml)
    old = lab.cml_lab_id
    assert labs.observe(fresh(lab), cml, actor=ACTOR) is None and fresh(lab).last_synced_at is not None
    sim_control.delete(f"{cml_url}/_sim/workers/{worker.name}/labs/{old}", timeout=5).raise_for_status()

    labs.sync_labs(worker, cml, actor=ACTOR)  # discovery leaves it to the drift check
    assert fresh(lab).status == L.BOOTED and fresh(lab).ports == ports

    assert labs.observe(fresh(lab), cml, actor=ACTOR) == f"its lab {old} is gone from CML"
    assert fresh(lab).status == L.ORPHANED and fresh(lab).ports == ports
    labs.sync_labs(worker, cml, actor=ACTOR)
    assert fresh(lab).status == L.ORPHANED and fresh(lab).ports == ports  # still kept

    lab = labs.reset_for_reimport(fresh(lab), cml, actor=ACTOR)
    assert (lab.status, lab.cml_lab_id, lab.import_sent_at) == (L.IMPORTING, "", None) and lab.ports == ports
    lab = labs.boot(lab, cml, worker, topology=lambda: demo_topology(ports), actor=ACTOR)
    assert lab.status == L.BOOTED and lab.cml_lab_id not in ("", old) and lab.ports == ports
    assert (L.ORPHANED, L.IMPORTING) in moves(changes, lab)


def test_a_stopped_lab_is_an_error_until_it_runs_again_or_is_replaced(worker, definition, cml):
    lab, ports = _booted_for(worker, definition, cml, status="RUNNING")
    cml.stop_lab(lab.cml_lab_id)
    assert labs.observe(fresh(lab), cml, actor=ACTOR) == f"its lab {lab.cml_lab_id} is STOPPED in CML, not running"
    assert fresh(lab).status == L.ERROR and fresh(lab).cml_state == "STOPPED"

    cml.start_lab(lab.cml_lab_id)  # someone started it again in CML
    assert labs.observe(fresh(lab), cml, actor=ACTOR) is None
    assert fresh(lab).status == L.BOOTED

    cml.stop_lab(lab.cml_lab_id)
    labs.observe(fresh(lab), cml, actor=ACTOR)
    old = lab.cml_lab_id
    replaced = labs.reset_for_reimport(fresh(lab), cml, actor=ACTOR)
    assert replaced.status == L.IMPORTING and replaced.ports == ports
    assert old not in cml.labs(show_all=True)  # not leaked in CML
    assert labs.reset_for_reimport(replaced, cml, actor=ACTOR).status == L.IMPORTING  # again: nothing to do
