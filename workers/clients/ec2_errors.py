"""EC2 and CloudWatch errors: botocore's exceptions mapped onto the typed errors of `lcm.http`.

`typed_error` turns an AWS error code (or HTTP status, or a botocore transport exception) into
`CapacityUnavailable` / `QuotaExceeded` / `Throttled` (all `Unavailable`), `Timeout`, `NotFound`,
`Conflict`, `BadRequest`, `Forbidden`, `AuthExpired` or `ExternalError` (EXTERNAL-SYSTEMS §2).
"""

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from lcm.http import AuthExpired, BadRequest, Conflict, ExternalError, Forbidden, NotFound, Timeout, Unavailable


class CapacityUnavailable(Unavailable):
    """EC2 has no capacity for this instance type here right now (InsufficientInstanceCapacity and kin)."""


class QuotaExceeded(CapacityUnavailable):
    """The account's instance or vCPU limit is reached (InstanceLimitExceeded, VcpuLimitExceeded)."""


class Throttled(Unavailable):
    """AWS still answered RequestLimitExceeded after the allowed retries."""


_CODE_ERRORS: dict[str, type[ExternalError]] = {
    "InsufficientInstanceCapacity": CapacityUnavailable,
    "InsufficientCapacity": CapacityUnavailable,
    "InsufficientHostCapacity": CapacityUnavailable,
    "InsufficientReservedInstanceCapacity": CapacityUnavailable,
    "InstanceLimitExceeded": QuotaExceeded,
    "VcpuLimitExceeded": QuotaExceeded,
    "RequestLimitExceeded": Throttled,
    "Throttling": Throttled,
    "ThrottlingException": Throttled,
    "UnauthorizedOperation": Forbidden,
    "AccessDenied": Forbidden,
    "AccessDeniedException": Forbidden,
    "OptInRequired": Forbidden,
    "AuthFailure": AuthExpired,
    "InvalidClientTokenId": AuthExpired,
    "SignatureDoesNotMatch": AuthExpired,
    "ExpiredToken": AuthExpired,
    "IncorrectInstanceState": Conflict,
    "IncorrectState": Conflict,
    "InvalidParameterValue": BadRequest,
    "InvalidParameter": BadRequest,
    "InvalidParameterCombination": BadRequest,
    "MissingParameter": BadRequest,
    "InternalError": Unavailable,
    "InternalFailure": Unavailable,
    "ServiceUnavailable": Unavailable,
    "Unavailable": Unavailable,
}
_STATUS_ERRORS: dict[int, type[ExternalError]] = {
    400: BadRequest,
    401: AuthExpired,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


def typed_error(
    system: str, operation: str, exc: Exception, *, connect_timeout: float, read_timeout: float
) -> ExternalError | None:
    """The typed error for a botocore exception (None for anything that is not one)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or "")
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        error_type = _error_type(code, status)
        detail = f"{code}: {message}" if message else code or "error"
        return error_type(system, operation, detail[:500], status, error)
    if isinstance(exc, ConnectTimeoutError):
        return Timeout(system, operation, f"no connection within {connect_timeout:g}s")
    if isinstance(exc, ReadTimeoutError):
        return Timeout(system, operation, f"no answer within {read_timeout:g}s")
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return Unavailable(system, operation, f"cannot connect: {exc.__class__.__name__}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AuthExpired(system, operation, "no usable AWS credentials are configured")
    if isinstance(exc, ParamValidationError):
        return BadRequest(system, operation, str(exc)[:500])
    if isinstance(exc, BotoCoreError):
        return ExternalError(system, operation, f"{exc.__class__.__name__}: {exc}"[:500])
    return None


def _error_type(code: str, status: int | None) -> type[ExternalError]:
    """The typed error for an AWS error code, else for its HTTP status."""
    error_type = _CODE_ERRORS.get(code)
    if error_type is not None:
        return error_type
    if code.endswith("NotFound") or code == "ResourceNotFound":
        return NotFound
    if code.endswith(".Malformed"):
        return BadRequest
    if status is not None and status >= 500:
        return Unavailable
    return _STATUS_ERRORS.get(status, ExternalError)
