"""With etcd, a change wakes its loop without waiting for a tick (SPEC §4): the projection puts the new status,
`lcm_watch`'s routing (`on_change`) turns the put into a pass. No tick runs in these tests at all."""

import logging
import time

import pytest

from lcm import coordination, projection
from lcm.coordination import EtcdCoordinator
from sessions.booking import session_create
from sessions.management.commands.lcm_watch import on_change
from sessions.models import LabletSession
from sessions.services import session_terminate
from tests.factories import DefinitionFactory
from tests.support.loops import drive, status_of
from tests.support.waiting import poll

logger = logging.getLogger("tests.etcd")

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def watched_etcd(etcd_url, settings, monkeypatch):
    """Projection into a real etcd, its watch routed like `manage.py lcm_watch`, passes in the in-process pool."""
    settings.LCM_ETCD_ENDPOINTS = etcd_url
    settings.LCM_INPROCESS_WORKERS = 2
    settings.LCM_LOOP_LABLETS_SECONDS = 60.0  # no tick runs here anyway: only the watch can wake the loop
    coord = EtcdCoordinator(etcd_url)
    monkeypatch.setattr(coordination, "_coordinator", coord)
    cancel = coord.watch_prefix(f"{coordination.PREFIX}/", on_change)
    projection.connect()
    yield coord
    projection.disconnect()
    cancel()


def test_terminating_a_ready_session_starts_its_teardown_at_once(sims, sim_worker, watched_etcd):
    sim_worker("w1")
    session = session_create(definition=DefinitionFactory(boot_lead_minutes=30), owner="t", actor="t")
    drive(lambda: status_of(session) == "READY")  # instantiated by hand-driven passes

    started = time.monotonic()
    terminated = session_terminate(session, actor="instructor", reason="candidate left")
    assert terminated.cleanup_pending
    # Its key holds TERMINATED while the teardown is due (a put the watch acts on), and goes when clean.
    assert watched_etcd.get(coordination.session_status_key(session.pk)) == "TERMINATED"
    assert poll(lambda: not LabletSession.objects.get(pk=session.pk).cleanup_pending, timeout=30, interval=0.05)
    elapsed = time.monotonic() - started
    logger.warning("terminate → teardown finished, woken through etcd, in %.2f s (no tick)", elapsed)
    print(f"terminate → teardown finished through etcd in {elapsed:.2f} s")
    assert LabletSession.objects.get(pk=session.pk).lab_record.status in ("WIPED", "DELETED")
    assert poll(lambda: watched_etcd.get(coordination.session_status_key(session.pk)) is None, timeout=10)
