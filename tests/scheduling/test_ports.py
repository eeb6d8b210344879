"""Port allocation: pure choice, idempotence, release, and the unique constraint under concurrency."""

import threading

import pytest
from django.db import IntegrityError, connection

from scheduling.ports import PortsExhausted, choose_ports
from tests.factories import LabRecordFactory, WorkerFactory
from workers.models import LabRecord, Port
from workers.port_services import ports_allocate, ports_release


def test_choose_ports_walks_up_from_the_hint_and_wraps():
    assert choose_ports(set(), 3, 2000, 2009) == [2000, 2001, 2002]
    assert choose_ports({2000, 2001}, 2, 2000, 2009, hint=2008) == [2008, 2009]
    assert choose_ports({2009}, 2, 2000, 2009, hint=2009) == [2000, 2001]
    with pytest.raises(PortsExhausted):
        choose_ports(set(range(2000, 2009)), 2, 2000, 2009)


@pytest.mark.django_db
def test_allocate_is_idempotent_and_release_frees():
    lab = LabRecordFactory()
    first = ports_allocate(lab, ["a_serial", "a_vnc"])
    assert sorted(first.values()) == [2000, 2001]
    assert ports_allocate(lab, ["a_serial", "a_vnc"]) == first
    assert lab.ports == first
    other = LabRecordFactory(worker=lab.worker)
    assert sorted(ports_allocate(other, ["b_serial"]).values()) == [2002]
    assert ports_release(lab) == 2
    assert Port.objects.filter(worker=lab.worker).count() == 1


@pytest.mark.django_db
def test_the_database_refuses_a_duplicate_port():
    lab = LabRecordFactory()
    Port.objects.create(worker=lab.worker, port=2500, lab_record=lab, name="x")
    with pytest.raises(IntegrityError):
        Port.objects.create(worker=lab.worker, port=2500, lab_record=LabRecordFactory(worker=lab.worker), name="y")


@pytest.mark.django_db
def test_exhausted_range_raises():
    worker = WorkerFactory(port_range_start=2000, port_range_end=2002)
    ports_allocate(LabRecordFactory(worker=worker), ["a", "b"])
    with pytest.raises(PortsExhausted):
        ports_allocate(LabRecordFactory(worker=worker), ["c", "d"])


@pytest.mark.django_db
def test_a_new_lab_takes_the_ports_past_the_highest_and_falls_back_at_the_end_of_the_range():
    worker = WorkerFactory(port_range_start=2000, port_range_end=2005)
    first = LabRecordFactory(worker=worker)
    assert ports_allocate(first, ["a", "b"], new_lab=True) == {"a": 2000, "b": 2001}
    second = LabRecordFactory(worker=worker)
    assert ports_allocate(second, ["a", "b", "c"], new_lab=True) == {"a": 2002, "b": 2003, "c": 2004}
    ports_release(first)
    # Past the highest only 2005 is left: the holes at the start of the range are found by the full read.
    assert sorted(ports_allocate(LabRecordFactory(worker=worker), ["a", "b"], new_lab=True).values()) == [2000, 2005]
    # A port taken past the highest (a racer) sends it to the full read too.
    third = LabRecordFactory(worker=WorkerFactory(port_range_start=3000, port_range_end=3009))
    Port.objects.create(worker=third.worker, port=3000, lab_record=LabRecordFactory(worker=third.worker), name="x")
    assert ports_allocate(third, ["a"], new_lab=True) == {"a": 3001}


@pytest.mark.parametrize("new_lab", [False, True])
@pytest.mark.django_db(transaction=True)
def test_concurrent_allocation_never_duplicates_a_port(new_lab):
    worker = WorkerFactory(port_range_start=2000, port_range_end=2059)
    labs = [LabRecordFactory(worker=worker) for _ in range(20)]
    barrier = threading.Barrier(len(labs))
    errors = []

    def allocate(lab):
        try:
            barrier.wait()
            record = LabRecord.objects.select_related("worker").get(pk=lab.pk)
            ports_allocate(record, ["p_serial", "p_vnc", "p_ssh"], new_lab=new_lab)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=allocate, args=(lab,)) for lab in labs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    ports = list(Port.objects.filter(worker=worker).values_list("port", flat=True))
    assert len(ports) == 60
    assert len(set(ports)) == 60
    assert all(Port.objects.filter(lab_record=lab).count() == 3 for lab in labs)
