"""The HTTP client base every external-system client builds on (CML, LDS, Grading Engine).

What it guarantees:
- explicit connect/read timeouts on every call; a timeout is never retried, so a call
  returns within its timeout (plus connect time) with `Timeout`;
- bounded retries with exponential backoff and jitter for idempotent calls on connection
  errors and 5xx answers (`retry_non_idempotent=True` to opt a POST in);
- typed errors instead of raw `requests` exceptions: `Unavailable` (`Timeout`),
  `AuthExpired`, `Forbidden`, `NotFound`, `Conflict`, `BadRequest`, `ExternalError`;
- one re-authentication on 401 when the subclass knows how (`_reauthenticate`);
- the current request id sent as `X-Request-ID`; no header or body in the logs, so no secret;
- one `lcm_external_calls_total` / `lcm_external_call_duration_seconds` sample per logical call
  (`lcm.metrics`: system, operation, outcome);
- keep-alive connections shared by every client of a thread (`shared_session`): a reconcile pass
  builds its clients afresh, and a new TCP connection per pass would cost both ends more than
  the call itself.
"""

import http.cookiejar
import logging
import os
import random
import threading
import time
import urllib.request
from dataclasses import dataclass

import requests

from lcm import metrics
from lcm.middleware import current_request_id

logger = logging.getLogger("lcm.http")

IDEMPOTENT_METHODS = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
RETRY_STATUSES = {500, 502, 503, 504}


class ExternalError(Exception):
    """An external system refused or failed a call; `status` is its HTTP status (None when it never answered)."""

    def __init__(self, system: str, operation: str, detail: str, status: int | None = None, body=None):
        self.system = system
        self.operation = operation
        self.detail = detail
        self.status = status
        self.body = body
        super().__init__(f"{system} {operation}: {detail}" + (f" (HTTP {status})" if status else ""))


class Unavailable(ExternalError):
    """The system could not be reached or answered 5xx (after the allowed retries)."""


class Timeout(Unavailable):
    """The system did not answer within the call's timeout."""


class AuthExpired(ExternalError):
    """401 even after re-authenticating: the credentials or the token are no longer accepted."""


class Forbidden(ExternalError):
    """403: authenticated but not allowed (or bad credentials where the API answers 403)."""


class NotFound(ExternalError):
    """404: the resource does not exist (any more)."""


class Conflict(ExternalError):
    """409 (or 423): the resource is in a state that refuses the operation."""


class BadRequest(ExternalError):
    """400/422: the system rejected the request as malformed."""


def call_outcome(exc: Exception) -> str:
    """The `outcome` label of a failed call: the typed error's name in snake case (`timeout`, `not_found`, ...)."""
    for kind in type(exc).__mro__:
        if kind in _OUTCOMES:
            return _OUTCOMES[kind]
    return "error"


_OUTCOMES = {
    Timeout: "timeout",
    Unavailable: "unavailable",
    AuthExpired: "auth_expired",
    Forbidden: "forbidden",
    NotFound: "not_found",
    Conflict: "conflict",
    BadRequest: "bad_request",
}
_STATUS_ERRORS = {400: BadRequest, 401: AuthExpired, 403: Forbidden, 404: NotFound, 409: Conflict, 422: BadRequest}


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.05
    read: float = 10.0


_thread = threading.local()


def shared_session() -> requests.Session:
    """This thread's connection pool, shared by every client it builds (a fresh one after a fork).

    It carries no state between clients: no auth, no headers, and cookies are refused. Unless the
    environment names a proxy, it does not look for proxies (nor for ~/.netrc) on every call, which
    costs more than a call to a nearby simulator; a CA bundle the environment names is used all the same.
    """
    if getattr(_thread, "pid", None) != os.getpid():
        session = requests.Session()
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        # Only a proxy needs the per-call environment lookups; a CA bundle named there is read once.
        session.trust_env = bool(urllib.request.getproxies())
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle and not session.trust_env:
            session.verify = bundle
        _thread.session, _thread.pid = session, os.getpid()
    return _thread.session


class TokenCache:
    """Bearer tokens shared by every client of a process (a reconcile pass builds its clients afresh),
    by whatever names the credential; a token may carry the monotonic time it is to be renewed at.

    `carried` remembers the token this thread's current call sent, so that `drop_carried` after a
    401 drops it only if no other thread has replaced it meanwhile.
    """

    def __init__(self):
        self._tokens: dict = {}
        self._lock = threading.Lock()
        self._sent = threading.local()

    def get(self, key) -> str | None:
        with self._lock:
            entry = self._tokens.get(key)
        if entry is None or time.monotonic() >= entry[1]:
            return None
        return entry[0]

    def put(self, key, token: str, renew_at: float = float("inf")) -> str:
        with self._lock:
            self._tokens[key] = (token, renew_at)
        return token

    def carried(self, token: str) -> str:
        self._sent.token = token
        return token

    def drop_carried(self, key) -> None:
        sent = getattr(self._sent, "token", None)
        with self._lock:
            if (self._tokens.get(key) or (None,))[0] == sent:
                self._tokens.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


class HttpClient:
    """A JSON-over-HTTP client for one base URL of one external system."""

    system = "external"

    def __init__(
        self,
        base_url: str,
        *,
        timeouts: Timeouts | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        backoff_max: float = 2.0,
        verify: bool | str = True,
        session: requests.Session | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.verify = verify
        self.http = session or shared_session()

    # -- hooks for subclasses ------------------------------------------------------------

    def _auth_headers(self) -> dict:
        """Headers that authenticate a call (e.g. a cached bearer token)."""
        return {}

    def _reauthenticate(self) -> bool:
        """Drop cached credentials and get new ones; True when a retry makes sense."""
        return False

    # -- the call ------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _call_headers(self, headers: dict | None, *, authenticated: bool) -> dict:
        """An attempt's headers: JSON, the request id being handled, credentials, then the caller's."""
        call_headers = {"Accept": "application/json"}
        request_id = current_request_id()
        if request_id != "-":
            call_headers["X-Request-ID"] = request_id
        if authenticated:
            call_headers.update(self._auth_headers())
        call_headers.update(headers or {})
        return call_headers

    def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        json=None,
        data=None,
        params=None,
        headers: dict | None = None,
        authenticated: bool = True,
        retry_non_idempotent: bool = False,
        timeout: Timeouts | None = None,
    ) -> requests.Response:
        """Send one logical call (with its retries); returns the 2xx/3xx response or raises a typed error."""
        started, outcome = time.monotonic(), "error"
        try:
            response = self._send(
                method, path, operation=operation, json=json, data=data, params=params, headers=headers,
                authenticated=authenticated, retry_non_idempotent=retry_non_idempotent, timeout=timeout,
            )  # fmt: skip
            outcome = "ok"
            return response
        except ExternalError as exc:
            outcome = call_outcome(exc)
            raise
        finally:
            metrics.observe_call(self.system, operation, outcome, time.monotonic() - started)

    def _send(
        self, method, path, *, operation, json, data, params, headers, authenticated, retry_non_idempotent, timeout
    ) -> requests.Response:
        """`request`'s attempts: retried on connection errors and 5xx when allowed, re-authenticated once on 401."""
        method = method.upper()
        may_retry = method in IDEMPOTENT_METHODS or retry_non_idempotent
        timeouts = timeout or self.timeouts
        reauthenticated = False
        attempt = 0
        while True:
            attempt += 1
            call_headers = self._call_headers(headers, authenticated=authenticated)
            started = time.monotonic()
            try:
                response = self.http.request(
                    method,
                    self.url(path),
                    json=json,
                    data=data,
                    params=params,
                    headers=call_headers,
                    timeout=(timeouts.connect, timeouts.read),
                    verify=self.verify,
                )
            except requests.Timeout:
                self._log(operation, method, path, None, started, attempt)
                raise Timeout(self.system, operation, f"no answer within {timeouts.read:g}s") from None
            except requests.RequestException as exc:
                self._log(operation, method, path, None, started, attempt)
                if may_retry and attempt <= self.retries:
                    self._sleep(attempt)
                    continue
                raise Unavailable(self.system, operation, f"cannot connect: {exc.__class__.__name__}") from None
            self._log(operation, method, path, response.status_code, started, attempt)
            status = response.status_code
            if status == 401 and authenticated and not reauthenticated and self._reauthenticate():
                reauthenticated = True
                continue
            if status in RETRY_STATUSES and may_retry and attempt <= self.retries:
                self._sleep(attempt)
                continue
            if status < 400:
                return response
            raise self._error(operation, response)

    def json(self, method: str, path: str, **kwargs):
        """`request` and decode the JSON body (None for an empty body)."""
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ExternalError(
                self.system,
                kwargs.get("operation", path),
                "answered with a body that is not JSON",
                response.status_code,
            ) from None

    # -- helpers -------------------------------------------------------------------------

    def _error(self, operation: str, response: requests.Response) -> ExternalError:
        try:
            body = response.json()
        except ValueError:
            body = response.text[:500]
        detail = (
            body.get("description") or body.get("detail") or body.get("message") if isinstance(body, dict) else None
        )
        detail = str(detail or body or response.reason or "error")[:500]
        status = response.status_code
        if status >= 500:
            return Unavailable(self.system, operation, detail, status, body)
        error_type = _STATUS_ERRORS.get(status, Conflict if status == 423 else ExternalError)
        return error_type(self.system, operation, detail, status, body)

    def _sleep(self, attempt: int) -> None:
        delay = min(self.backoff_max, self.backoff * (2 ** (attempt - 1)))
        time.sleep(delay * (0.5 + random.random() / 2))

    def _log(self, operation, method, path, status, started, attempt):
        # A first attempt that succeeded is routine (DEBUG: several per reconcile pass); failures and
        # retries are what an operator looks for.
        routine = attempt == 1 and status is not None and status < 400
        logger.log(
            logging.DEBUG if routine else logging.INFO,
            "%s %s %s %s -> %s in %.0f ms (attempt %d)",
            self.system,
            operation,
            method,
            path.split("?")[0],
            status if status is not None else "no answer",
            (time.monotonic() - started) * 1000,
            attempt,
            extra={"system": self.system, "operation": operation, "status": status},
        )
