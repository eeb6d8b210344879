"""Page helpers every app's views share (SPEC §5.3–5.4): role gates, safe query strings, filter errors,
pagination, live fragments that refresh themselves, and answers to buttons.

Live updates are short polls of a page's `live` fragment. The poll URL carries a digest of what the
browser shows; when nothing changed the server answers 204 and htmx leaves the page alone, so a form
being typed into or a focused button is only replaced when the data really changed. A view marked
`live_page` names its change scopes (`lcm.live`): a poll whose digest was rendered under the scopes'
current stamps (and recently enough) gets its 204 before the view runs, without rendering.
"""

import hashlib
import re
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Case, IntegerField, Value, When
from django.http import QueryDict
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.cache import patch_vary_headers
from django.utils.safestring import mark_safe

from lcm import live
from lcm.roles import is_admin, is_instructor

POLL_EVERY = "1s"  # a change is visible within 2 s (SPEC §5.3)
PAGE_SIZE = 50
_MAX_PARAM_LENGTH = 500
_CSRF_INPUT = re.compile(r'<input type="hidden" name="csrfmiddlewaretoken" value="[^"]*">')


def instructor_required(view):
    """Login, then the instructor role (admins have it too); anyone else gets 403."""

    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        if not is_instructor(request.user):
            raise PermissionDenied("These pages are for instructors and admins.")
        return view(request, *args, **kwargs)

    return wrapper


def admin_required(view):
    """Login, then the admin role; instructors get 403 (and never see the links)."""

    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        if not is_admin(request.user):
            raise PermissionDenied("Only admins may do this.")
        return view(request, *args, **kwargs)

    return wrapper


def page_context(request, nav: str, **extra) -> dict:
    """What every page template needs besides its own data: the active nav entry and the user's role."""
    return {"nav": nav, "can_admin": is_admin(request.user), **extra}


def clean_params(query: QueryDict) -> QueryDict:
    """A copy of the query string safe to hand to a FilterSet: no NUL characters (PostgreSQL refuses
    them in text), no unbounded values. Anything else wrong becomes a form error in the FilterSet."""
    cleaned = QueryDict(mutable=True)
    for key, values in query.lists():
        cleaned.setlist(key[:100], [v.replace("\x00", "")[:_MAX_PARAM_LENGTH] for v in values])
    return cleaned


def filter_errors(filterset) -> dict[str, str]:
    """`{query parameter: message}` for the filters that were ignored because their value is invalid."""
    return {name.rstrip("_"): " ".join(errors) for name, errors in filterset.errors.items()}


def paginate(rows, params: QueryDict, per_page: int = PAGE_SIZE):
    """One page of `rows` (bad `?page` values fall back to the first or last page) and the query without `page`."""
    page = Paginator(rows, per_page).get_page(params.get("page"))
    rest = params.copy()
    rest.pop("page", None)
    rest.pop("v", None)
    return page, rest.urlencode()


def _digest(html: str) -> str:
    # A CSRF token is masked differently on every render; it is not a change the user could see.
    return hashlib.blake2s(_CSRF_INPUT.sub("", html).encode(), digest_size=8).hexdigest()


def _seen_key(request, path: str, query: QueryDict, digest: str) -> tuple:
    return live.page_key(request.user.pk, live.roles_of(request.user), path, query, digest)


def live_page(scopes=None):
    """Mark a view that answers with `render_live`: `scopes(**view_kwargs)` names its change scopes
    (default: `global`). A poll whose digest is current under those scopes' stamps gets 204 here,
    before the view queries or renders anything (`lcm.live`)."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            names = tuple(wrapper.live_scopes(**kwargs))
            if settings.LCM_LIVE_DIGEST_ONLY or request.method != "GET":
                return view(request, *args, **kwargs)
            digest = request.GET.get("v")
            poll = bool(digest and request.htmx and not request.htmx.boosted)
            # Read before the view reads anything, so a change made meanwhile shows on the next poll.
            request.live_stamp = live.versions(names, cached=poll)
            if poll:
                key = _seen_key(request, request.path, clean_params(request.GET), digest)
                if live.is_current(key, request.live_stamp):
                    return live.unchanged_response()
            return view(request, *args, **kwargs)

        # `lcm.live_polls.LivePollMiddleware` finds the scopes here (through the login and role decorators,
        # which copy the attribute) and answers most unchanged polls before the chain reaches this wrapper.
        wrapper.live_scopes = scopes or _global_scope
        return wrapper

    return decorator


def _global_scope(**kwargs) -> tuple[str, ...]:
    return (live.GLOBAL,)


def render_live(request, template: str, context: dict, *, status: int = 200, poll: bool = True, path: str = ""):
    """Render a page whose `live` fragment refreshes itself (SPEC §5.3).

    The template defines `live_body` (the changing content) and `live` (its polling
    wrapper, showing `{{ live_body }}`). A poll whose `?v=` equals the digest of the current
    body gets 204 (no swap). htmx requests get only the `live` fragment; `path` is the page
    the poll asks (the current one unless an action URL answered).
    """
    stamp = getattr(request, "live_stamp", None)  # read by `live_page` before the view ran
    body = render_to_string(f"{template}#live_body", context, request=request)
    digest = _digest(body)
    fragment = bool(request.htmx) and not request.htmx.boosted  # a boosted link or form wants the whole page
    query = clean_params(request.GET) if request.method == "GET" else QueryDict(mutable=True)
    if stamp is not None:
        live.remember(_seen_key(request, path or request.path, query, digest), stamp)
    if request.method == "GET" and fragment and request.GET.get("v") == digest:
        return live.unchanged_response()
    query["v"] = digest
    live_context = {
        "live_body": mark_safe(body),  # noqa: S308 - rendered by our own template just above
        "live_url": f"{path or request.path}?{query.urlencode()}",
        "live_poll": poll,
        "poll_every": POLL_EVERY,
    }
    name = f"{template}#live" if fragment else template
    response = render(request, name, {**context, **live_context}, status=status)
    patch_vary_headers(response, ["HX-Request"])
    response["Cache-Control"] = "no-store"
    return response


def toast_html(request, text: str, level: str = "success") -> str:
    """A message for htmx responses, appended to the page's message area out of band."""
    return render_to_string("includes/toast_oob.html", {"text": text, "level": level}, request=request)


def action_response(request, *, page_url: str, render_page, text: str, level: str, status: int):
    """Answer a button: htmx gets the refreshed `live` fragment plus a toast; a plain form post
    gets a Django message and a redirect back to the page (never an error page)."""
    if request.htmx:
        response = render_page(status)
        response.content += toast_html(request, text, level).encode()
        return response
    getattr(messages, level)(request, text)
    return redirect(page_url)


@dataclass(frozen=True)
class Choice:
    """One option of a filter's select."""

    value: str
    label: str


def status_choices(values, presets=()) -> list[Choice]:
    """Options of a status filter: presets (comma lists) first, then each status."""
    return [Choice(v, label) for v, label in presets] + [Choice(v, v) for v in values]


class ListOptions:
    """How a list page is sorted and paged: `?sort=<key>` or `-<key>` (descending) over `SORT_KEYS`, and
    `?page_size=` from `PAGE_SIZES`. A value outside them is ignored and named in the page's filter errors.

    A subclass per list names its keys: `SORT_KEYS` maps a key to a field or lookup, and `annotate(rows)`
    adds the annotations a key sorts by (a count, a rank). Every ordering ends with `TIEBREAK` (unique
    together), so rows never swap places between pages.
    """

    SORT_KEYS: dict[str, str] = {}
    # The sort bar's labels: a list of cards has no column headers, and a table stacked on a narrow
    # screen hides them (`includes/sort_bar.html`).
    LABELS: dict[str, str] = {}
    DEFAULT_SORT = ""
    TIEBREAK: tuple[str, ...] = ("created_at", "id")
    PAGE_SIZES = (25, 50, 100, 200)
    DEFAULT_PAGE_SIZE = 50

    def __init__(self, params: QueryDict):
        self.errors: dict[str, str] = {}
        sort = params.get("sort", "").strip()
        if sort and sort.removeprefix("-") not in self.SORT_KEYS:
            self.errors["sort"] = f"unknown sort key; expected one of {', '.join(self.SORT_KEYS)} (- first: descending)"
            sort = ""
        self.sort = sort or self.DEFAULT_SORT
        self.page_size = self.DEFAULT_PAGE_SIZE
        raw = params.get("page_size", "").strip()
        if raw:
            if raw.isdigit() and int(raw) in self.PAGE_SIZES:
                self.page_size = int(raw)
            else:
                self.errors["page_size"] = f"choose one of {', '.join(map(str, self.PAGE_SIZES))} rows per page"

    @property
    def key(self) -> str:
        return self.sort.removeprefix("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def annotate(self, rows):
        """`rows` with what the current key sorts by; the default sorts by plain fields."""
        return rows

    def order(self, rows):
        """`rows` in the chosen order, the tie-breakers following the same direction."""
        sign = "-" if self.descending else ""
        fields = (self.SORT_KEYS[self.key], *self.TIEBREAK)
        return self.annotate(rows).order_by(*(f"{sign}{field}" for field in fields))

    def links(self, params: QueryDict) -> dict[str, dict]:
        """Per sortable column: the query string that sorts by it (again: the other way) and its aria-sort."""
        base = params.copy()
        for name in ("sort", "page", "v"):
            base.pop(name, None)
        links = {}
        for key in self.SORT_KEYS:
            current = key == self.key
            query = base.copy()
            query["sort"] = f"-{key}" if current and not self.descending else key
            links[key] = {
                "query": query.urlencode(),
                "aria": ("descending" if self.descending else "ascending") if current else "none",
                "arrow": ("↓" if self.descending else "↑") if current else "",
            }
        return links


def list_page(params: QueryDict, filterset, options: ListOptions, *, errors=None) -> dict:
    """One page of a filtered, sorted list page and what its template shows around it: `page`, `query`
    (without the page), `errors` (the filters' and the options'), `listing`, `sort_links` (`sort_columns`
    for a sort bar) and `total` (the rows before filtering, for "N of M"). A constant number of queries,
    whatever the number of rows."""
    page, query = paginate(options.order(filterset.qs), params, per_page=options.page_size)
    links = options.links(params)
    return {
        "page": page,
        "query": query,
        "params": params,
        "errors": {**filter_errors(filterset), **options.errors, **(errors or {})},
        "listing": options,
        "sort_links": links,
        "sort_columns": [(options.LABELS.get(key, key.capitalize()), links[key]) for key in options.SORT_KEYS],
        "total": filterset.queryset.order_by().count(),
    }


def status_rank(values, field: str = "status"):
    """An expression ranking `field` by its place in `values` (a lifecycle order), for sorting by status."""
    whens = [When(**{field: value}, then=Value(i)) for i, value in enumerate(values)]
    return Case(*whens, default=Value(len(values)), output_field=IntegerField())
