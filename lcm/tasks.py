"""Thin Celery wrappers: a tick per loop (beat) and one reconcile per key. No logic lives here."""

from celery import shared_task

from lcm import loops


@shared_task(name="lcm.tick", ignore_result=True)
def tick_task(loop_name: str) -> int:
    """Run a loop's tick and fan out one reconcile task per key needing work (not already queued)."""
    return loops.enqueue_many(loop_name, loops.celery_tick(loop_name))


@shared_task(name="lcm.reconcile", ignore_result=True)
def reconcile_task(loop_name: str, key: str) -> str:
    """One reconcile pass of one key (idempotent; acks late, so a killed worker loses nothing)."""
    return loops.run_queued(loop_name, key).action
