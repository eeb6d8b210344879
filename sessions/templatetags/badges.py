"""`{{ status|badge_colour:"worker" }}`: the colour name of a status badge, read from the choice sets' colour maps.

A kind names the choice set; the history's `entity` values (session, user_session,
grading_session) are kinds too, so a timeline row passes its entity as it is.
"""

from django import template

from grading.states import GRADING_BADGE_COLOURS, RESULT_BADGE_COLOURS
from sessions.states import DEFINITION_BADGE_COLOURS, SESSION_BADGE_COLOURS, USER_SESSION_BADGE_COLOURS
from workers.states import DESIRED_BADGE_COLOURS, LAB_BADGE_COLOURS, LICENSE_BADGE_COLOURS, WORKER_BADGE_COLOURS

register = template.Library()

BADGE_COLOURS_BY_KIND: dict[str, dict[str, str]] = {
    "session": SESSION_BADGE_COLOURS,
    "user_session": USER_SESSION_BADGE_COLOURS,
    "grading_session": GRADING_BADGE_COLOURS,
    "definition": DEFINITION_BADGE_COLOURS,
    "worker": WORKER_BADGE_COLOURS,
    "desired": DESIRED_BADGE_COLOURS,
    "licence": LICENSE_BADGE_COLOURS,
    "lab": LAB_BADGE_COLOURS,
    "result": RESULT_BADGE_COLOURS,
}
# The colour of a value the set does not know (a history row older than a renamed status).
UNKNOWN_COLOUR = "grey"


@register.filter
def badge_colour(status, kind="") -> str:
    """The colour name of `status` in the `kind` choice set (session when no kind is given).

    An unknown kind is a template bug and raises KeyError; an unknown status is grey."""
    return BADGE_COLOURS_BY_KIND[kind or "session"].get(status, UNKNOWN_COLOUR)
