"""Time as people read it on the pages: `{{ session.timeslot_end|time_left }}` → "1 h 05 min left"."""

from django import template
from django.utils import timezone

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
