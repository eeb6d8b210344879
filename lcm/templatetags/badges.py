"""`{{ status|badge_colour:"worker" }}`: the colour name of a status badge, read from the choice sets' colour maps.

Each app registers the colour maps of its choice sets (`register_colours`, in `AppConfig.ready()`),
so the kernel names no app. A kind names the choice set; the history's `entity` values (session,
user_session, grading_session) are kinds too, so a timeline row passes its entity as it is.
"""

from django import template

register = template.Library()

# kind → {status: colour name}; the CSS has one `.bg-<colour>` class per colour name.
BADGE_COLOURS_BY_KIND: dict[str, dict[str, str]] = {}
# The colour of a value the set does not know (a history row older than a renamed status).
UNKNOWN_COLOUR = "grey"


def register_colours(kind: str, colours: dict[str, str]) -> None:
    """The badge colours of one choice set, by the kind templates name it with."""
    BADGE_COLOURS_BY_KIND[kind] = colours


@register.filter
def badge_colour(status, kind="") -> str:
    """The colour name of `status` in the `kind` choice set (session when no kind is given).

    An unknown kind is a template bug and raises KeyError; an unknown status is grey."""
    return BADGE_COLOURS_BY_KIND[kind or "session"].get(status, UNKNOWN_COLOUR)
