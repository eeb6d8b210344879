"""Licence intents of a worker (SPEC §3.6, EXTERNAL-SYSTEMS.md §1.2), carried out by the worker reconciler.

An admin asks for a registration (with its token) or a deregistration (`workers.services`); each pass
of the worker reconciler moves it on against CML and records the outcome on the worker
(`license_status`, `license_error`) and on the `LicenseRequest`. Each step is resumable: a pass that
died after submitting a registration finds it running (409) or finished on the controller.
"""

from datetime import timedelta

from lcm import http
from workers.autoscaling import RECONCILER_ACTOR
from workers.clients.cml import cml_client_for
from workers.models import LicenseAction, LicenseRequest
from workers.services import license_request_submitted, worker_license_outcome
from workers.states import LicenseStatus

ACTOR = RECONCILER_ACTOR
POLL_SECONDS = 2.0
TIMEOUT = timedelta(minutes=5)
# Registration states that end an attempt without success (EXTERNAL-SYSTEMS.md §1.2, inferred values).
FAILED_STATES = {"FAILED", "RETRY_FAILED", "EXPIRED"}


def carry_out(worker, now) -> float | None:
    """Carry out a licence intent; returns seconds until the next poll, None when there is nothing to wait for."""
    if worker.license_status == LicenseStatus.DEREGISTERING:
        return _deregister(worker)
    if worker.license_status != LicenseStatus.REGISTERING:
        return None
    cml = cml_client_for(worker)
    request = (
        LicenseRequest.objects.filter(worker=worker, action=LicenseAction.REGISTER, finished_at__isnull=True)
        .order_by("-requested_at", "-id")
        .first()
    )
    unsubmitted = request is None or request.submitted_at is None
    if unsubmitted and not _submit(worker, cml, request, now):
        return None  # the submission settled the outcome
    return _poll(worker, cml, request, now)


def _submit(worker, cml, request, now) -> bool:
    """Submit the registration; False when that already settled the outcome."""
    if request is None or not request.token:
        _outcome(worker, LicenseStatus.FAILED, "no registration token was recorded with the request")
        return False
    try:
        cml.register_licence(request.token)
    except http.Conflict:
        pass  # a registration is already running (ours, from a pass that died before recording it)
    except http.BadRequest as exc:
        status, _ = _registration(cml)
        if status == "COMPLETED":
            _outcome(worker, LicenseStatus.REGISTERED)
        else:
            _outcome(worker, LicenseStatus.FAILED, f"CML refused the registration: {exc.detail}")
        return False
    license_request_submitted(request)
    request.submitted_at = now
    return True


def _poll(worker, cml, request, now) -> float | None:
    status, failure = _registration(cml)
    if status == "COMPLETED":
        _outcome(worker, LicenseStatus.REGISTERED)
        return None
    if status in FAILED_STATES:
        _outcome(worker, LicenseStatus.FAILED, failure or f"registration {status}")
        return None
    if now - request.submitted_at > TIMEOUT:
        _outcome(worker, LicenseStatus.FAILED, f"no registration outcome within {TIMEOUT} (last status {status})")
        return None
    return POLL_SECONDS


def _registration(cml) -> tuple[str, str]:
    """(registration status, failure message) from `GET /licensing`."""
    registration = (cml.licensing() or {}).get("registration") or {}
    failure = (registration.get("register_time") or {}).get("failure") or ""
    return str(registration.get("status") or "").upper(), str(failure)


def _deregister(worker) -> float | None:
    try:
        told = cml_client_for(worker).deregister_licence()
    except http.Conflict:
        return POLL_SECONDS  # a licensing operation is running on the controller
    except http.BadRequest:
        told = True  # it was not registered: that is the outcome asked for
    error = "" if told else "deregistered on the worker, but the licensing server could not be told"
    _outcome(worker, LicenseStatus.UNREGISTERED, error)
    return None


def _outcome(worker, status: str, error: str = "") -> None:
    reason = f"licence {status.lower()}" + (f": {error}" if error else "")
    worker_license_outcome(worker, status, actor=ACTOR, error=error, reason=reason)
