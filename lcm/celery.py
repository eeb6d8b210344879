"""The Celery app: Redis broker, one beat schedule for every loop (intervals from settings; ticks expire).

`acks_late` + `task_reject_on_worker_lost`: a worker killed mid-task leaves the message to be
redelivered, and the reconcilers are idempotent; prefetch 1 keeps work spread evenly.

Ticks travel on their own queue, which every worker consumes besides the default one: behind a
backlog of reconcile tasks (a burst of bookings) a tick would otherwise wait, expire unrun, and
placement would stall until the backlog drained.

A task carries the request id of whatever published it (a message header set by `before_task_publish`)
and binds it for its log lines and history rows; a task published by no request uses its own task id.

Database connections follow Django's own rule (`CONN_MAX_AGE`, closed when unusable) around each
task, as around a web request: Celery's Django fixup would otherwise close them before and after
every task, i.e. a new PostgreSQL backend for every reconcile pass.
"""

import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun, worker_ready
from kombu import Queue

from lcm.logging import request_id_var

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


# The message header that carries the id of the request (or task) that published a task.
REQUEST_ID_HEADER = "lcm_request_id"


@before_task_publish.connect
def _carry_request_id(headers=None, **kwargs):
    """A task published while a request (or another task) is handled carries its request id."""
    request_id = request_id_var.get()
    if headers is not None and request_id != "-":
        headers.setdefault(REQUEST_ID_HEADER, request_id)


@task_prerun.connect
def _bind_request_id(task_id=None, task=None, **kwargs):
    """Log lines and history rows of a task carry the request id it was published with, else its own task id:
    one request's lines can be followed from gunicorn into the Celery workers (`grep <id>`)."""
    carried = task.request.get(REQUEST_ID_HEADER) if task is not None else None
    request_id_var.set(str(carried or task_id or "-"))


@task_postrun.connect
def _unbind_request_id(**kwargs):
    request_id_var.set("-")


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
