"""Time as people read it on the pages: `{{ session.timeslot_end|time_left }}` → "1 h 05 min left";
`{{ moment|when:"Y-m-d H:i" }}` → a `<time>` element shown in the user's time zone."""

from datetime import UTC, datetime

from django import template
from django.template.defaultfilters import date
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


@register.filter
def time_left(end, now=None) -> str:
    """What is left until `end`, to the minute ("ended" once it passed); empty for no end."""
    if not end:
        return ""
    seconds = (end - (now or timezone.now())).total_seconds()
    if seconds <= 0:
        return "ended"
    minutes = int(-(-seconds // 60))  # a started minute counts: "1 min left" until the very end
    if minutes < 60:
        return f"{minutes} min left"
    return f"{minutes // 60} h {minutes % 60:02d} min left"


@register.filter
def when(moment, fmt="Y-m-d H:i"):
    """`{{ session.created_at|when:"Y-m-d H:i" }}`: a `<time>` element the browser rewrites to the user's
    time zone (static/lcm/time.js); the server renders UTC, and the UTC value stays in the tooltip.

    `fmt` is a Django date format of the letters Y m d D H i s; `|when:"rel"` renders a relative time
    ("in 12 min", "3 min ago") that time.js keeps current, `|when:"rel:ends|ended"` one with
    a verb for the future and one for the past ("ends in 12 min", "ended 3 min ago").
    Empty for no moment, so `|default:"—"` works.
    """
    if not moment:
        return ""
    if not isinstance(moment, datetime) or timezone.is_naive(moment):
        return date(moment, fmt)  # a plain date or a naive time has no zone to convert
    utc = timezone.localtime(moment, UTC)
    iso = utc.isoformat().replace("+00:00", "Z")
    tooltip = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    if fmt.startswith("rel"):
        verbs = fmt[4:]  # "rel:starts|started" → "starts in 12 min" / "started 3 min ago"
        text = relative(moment, verbs=verbs)
        return format_html('<time datetime="{}" title="{}" data-rel="{}">{}</time>', iso, tooltip, verbs, text)
    return format_html('<time datetime="{}" title="{}" data-fmt="{}">{}</time>', iso, tooltip, fmt, date(utc, fmt))


def relative(moment, now=None, verbs="") -> str:
    """ "in 12 min" / "3 min ago" / "in 2 h 05 min" / "in 3 days", to the minute (as time.js writes it);
    `verbs` "starts|started" put a verb before it ("starts in 12 min", "started 3 min ago")."""
    seconds = (moment - (now or timezone.now())).total_seconds()
    minutes = int(abs(seconds) // 60)
    if minutes < 1:
        return f"{verbs.partition('|')[0 if seconds > 0 else 2]} now".strip()
    if minutes < 60:
        span = f"{minutes} min"
    elif minutes < 48 * 60:
        span = f"{minutes // 60} h {minutes % 60:02d} min"
    else:
        span = f"{minutes // 1440} days"
    future, _, past = verbs.partition("|")
    if seconds > 0:
        return f"{future} in {span}".strip()
    return f"{past or future} {span} ago".strip()


@register.filter
def slot_relative(start, end):
    """`{{ s.timeslot_start|slot_relative:s.timeslot_end }}`: "starts in 12 min" before the slot, then
    "ends in 40 min" / "ended 3 min ago"."""
    if start and start > timezone.now():
        return when(start, "rel:starts|started")
    return when(end, "rel:ends|ended")
