"""The Celery app: Redis broker, one beat schedule for every loop (intervals from settings; ticks expire).

`acks_late` + `task_reject_on_worker_lost`: a worker killed mid-task leaves the message to be
redelivered, and the reconcilers are idempotent; prefetch 1 keeps work spread evenly.

Ticks travel on their own queue, which every worker consumes besides the default one: behind a
backlog of reconcile tasks (a burst of bookings) a tick would otherwise wait, expire unrun, and
placement would stall until the backlog drained.

Database connections follow Django's own rule (`CONN_MAX_AGE`, closed when unusable) around each
task, as around a web request: Celery's Django fixup would otherwise close them before and after
every task, i.e. a new PostgreSQL backend for every reconcile pass.
"""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_ready
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lcm.settings")

app = Celery("lcm")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["lcm"])
app.conf.task_queues = (Queue("celery"), Queue("lcm.ticks"))
app.conf.task_routes = {"lcm.tick": {"queue": "lcm.ticks"}}
# The fixup closes connections only every this many tasks; `_close_old_connections` does the real work.
app.conf.update({"CELERY_DB_REUSE_MAX": 10_000})


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(**kwargs):
    # Imported here: Django is set up only once the worker runs.
    from django.db import close_old_connections

    close_old_connections()


@worker_ready.connect
def _forget_queue_markers(**kwargs):
    """A worker starting after a crash: what the dead one had taken may be lost, so let the ticks queue it again."""
    # Imported here: lcm.loops needs the app registry, ready only once the worker runs.
    from lcm.loops import forget_queued

    forget_queued()


@app.on_after_configure.connect
def _beat_schedule(sender, **kwargs):
    # Imported here: the apps register their loops in `AppConfig.ready()`, so Django must be set up first.
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    from lcm.loops import LOOPS

    for name, loop in LOOPS.items():
        sender.add_periodic_task(
            loop.interval,
            sender.signature("lcm.tick", args=[name], options={"expires": max(1.0, loop.interval)}),
            name=f"tick-{name}",
        )
