"""The `attention` loop (SPEC §11): tell the configured recipients and webhooks about needs-attention items.

Level-triggered: each tick reads the attention list (`scheduling.attention.attention_items`) and announces the
items not announced before, remembered by kind, object and since when the item has stood (`AttentionNotice`),
so an episode is announced once and a new episode (the same worker unreachable again later) again. Several new
items of one kind in a tick make one notice (an exam's 120 unplaceable sessions are one email, naming the first
few). The kinds whose own status change is announced already (a session ending FAILED, a grading FAULTED, a
worker going FAILED: the apps' notices) are not repeated here. Nothing is read when nobody listens.
"""

import hashlib
from collections import defaultdict
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from lcm import notifications
from lcm.models import AttentionNotice
from scheduling.attention import Item, attention_items

# Attention kind → what its notice kind means (the admin's choices for a recipient).
KINDS = {
    "attention.unplaceable": "Sessions due for placement that no worker takes (needs attention)",
    "attention.drift": "A READY or RUNNING session's lab is gone or not running in CML (needs attention)",
    "attention.worker_unreachable": "A RUNNING or DRAINING worker's CML does not answer (needs attention)",
    "attention.drain_deadline": "A drain deadline cuts booked sessions short (needs attention)",
    "attention.stale_loop": "A control loop is stale, failing or missing (needs attention)",
}
ANNOUNCED = frozenset(kind.removeprefix("attention.") for kind in KINDS)
# How many items one notice names (the rest are counted; the attention page lists them all).
NAMED = 10
# Remembered episodes that no longer stand are forgotten after this long.
FORGET_AFTER = timedelta(days=7)


def _key(item: Item) -> tuple[str, str, object]:
    return item.kind, f"{item.object['type']}:{item.object['id']}", item.since


def announce_attention(now=None) -> int:
    """The loop's tick: announce the new items; returns how many notices were recorded."""
    if not notifications.listening():
        return 0
    now = now or timezone.now()
    items = [item for item in attention_items(now) if item.kind in ANNOUNCED]
    current = {_key(item): item for item in items}
    known = _known(current)
    new = [item for key, item in current.items() if key not in known]
    by_kind = defaultdict(list)
    for item in new:
        by_kind[item.kind].append(item)
    notices = [_notice(kind, grouped) for kind, grouped in by_kind.items()]
    with transaction.atomic():
        AttentionNotice.objects.bulk_create(
            [AttentionNotice(kind=k, object_key=o, since=s) for k, o, s in (_key(item) for item in new)],
            ignore_conflicts=True,
        )
        AttentionNotice.objects.filter(notified_at__lt=now - FORGET_AFTER).delete()
        if notices:
            notifications.notify(notices)
    return len(notices)


def _known(current: dict) -> set:
    """Which of the current items were announced already: one query."""
    if not current:
        return set()
    match = Q()
    for kind, object_key, _since in current:
        match |= Q(kind=kind, object_key=object_key)
    rows = AttentionNotice.objects.filter(match).values_list("kind", "object_key", "since")
    return set(rows)


def _notice(kind: str, items: list[Item]) -> notifications.Notice:
    first = items[0]
    ids = sorted(f"{i.object['type']}:{i.object['id']}:{i.since.isoformat() if i.since else ''}" for i in items)
    key = f"attention:{kind}:" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
    listed = [{**i.object, "reason": i.reason, "since": i.since.isoformat() if i.since else None} for i in items]
    if len(items) == 1:
        summary = f"{first.object['name']}: {first.reason}"
        link = first.object["url"]
    else:
        summary = f"{len(items)} items need attention ({kind.replace('_', ' ')}); the first: {first.reason}"
        link = reverse("scheduling:attention")
    return notifications.Notice(
        kind=f"attention.{kind}",
        subject=f"{first.object['type']}/{first.object['id']}" if len(items) == 1 else f"attention/{kind}",
        summary=summary[:500],
        key=key,
        data={"kind": kind, "severity": first.severity, "count": len(items), "items": listed[:NAMED]},
        link=link,
    )
