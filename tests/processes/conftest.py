"""The real process set, started by the native launcher (`lcm.tools.stack`) against pytest-django's test database.

Every test here gets its own stack: etcd (fresh data dir), the simulators in their own process
(zero delay), a Celery worker, beat, the watcher and gunicorn, all on free ports, with a Redis
database number of their own (flushed first) and short loop intervals. The stack is stopped
before pytest-django empties the tables, so no process outlives the test or holds the database.
"""

import os

import pytest
from django.db import connection

from lcm import coordination, projection
from lcm.tools.bench.rig import LifecycleRig
from lcm.tools.processes import database_url_of, etcd_binary, flush_redis_db
from lcm.tools.stack import Stack, StackConfig

REDIS_DB = int(os.environ.get("LCM_TEST_REDIS_DB", "12"))
LOOP_SECONDS = "0.5"


@pytest.fixture
def start_stack(transactional_db, settings, tmp_path):
    """Start a stack (`start_stack(**config)`); it is stopped, and this process unhooked, at teardown."""
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian package etcd-server; scripts/test installs it as root)")
    if connection.vendor != "postgresql":
        pytest.skip("the process tests need PostgreSQL (DATABASE_URL)")
    started: list[Stack] = []

    def start(*, env: dict | None = None, **fields) -> tuple[Stack, LifecycleRig]:
        state_dir = tmp_path / f"stack-{len(started)}"
        broker_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
        config = StackConfig.on_free_ports(
            state_dir=str(state_dir),
            database_url=database_url_of(connection.settings_dict),
            broker_url=broker_url,
            zero_delay=True,
            collectstatic=False,
            ready_timeout=90,
            env={
                "LCM_LOOP_PLACEMENT_SECONDS": LOOP_SECONDS,
                "LCM_LOOP_LABLETS_SECONDS": LOOP_SECONDS,
                "LCM_HTTP_READ_TIMEOUT": "5",
                **(env or {}),
            },
            **fields,
        )
        flush_redis_db(broker_url)
        stack = Stack(config, die_with_parent=True)
        started.append(stack)
        stack.start()
        rig = LifecycleRig(stack)
        rig.point_settings(settings)
        # This process books like the web role: its changes are projected into the stack's etcd.
        projection.connect()
        return stack, rig

    yield start
    projection.disconnect()
    for stack in started:
        stack.stop()
    coordination.reset_coordinator()
