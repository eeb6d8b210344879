"""The evidence store (SPEC §9): S3-compatible object storage through boto3, behind the typed errors of `lcm.http`.

Settings: `LCM_EVIDENCE_BUCKET`, `LCM_EVIDENCE_ENDPOINT_URL` (unset: `LCM_AWS_ENDPOINT_URL`, so the moto
simulator in the embedded default, the launcher and the tests; real S3 when both are unset), `LCM_AWS_REGION`,
the HTTP timeouts. The bucket is made when it is missing (a fresh moto, a reset). Errors: `NotFound` for a key
that is not there, `Unavailable` when the store cannot be reached or answers 5xx after botocore's retries,
`ExternalError` for any other refusal. Object contents are never logged (they are the candidate's).
"""

import logging
import os
import threading

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from lcm.http import ExternalError, NotFound, Unavailable

logger = logging.getLogger("lcm.grading.storage")

SYSTEM = "s3"
# moto accepts any key; with an endpoint and no credentials, skip the credential chain (as the EC2 client does).
LOCAL_ENDPOINT_CREDENTIALS = {"aws_access_key_id": "lcm-local", "aws_secret_access_key": "lcm-local"}
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}
_MISSING_BUCKET = {"NoSuchBucket"}


class EvidenceStore:
    """One bucket of an S3-compatible store."""

    def __init__(self, *, bucket: str, endpoint_url: str | None, region: str, connect_timeout: float, read_timeout):
        self.bucket = bucket
        credentials = {}
        if endpoint_url and not os.environ.get("AWS_ACCESS_KEY_ID"):
            credentials = dict(LOCAL_ENDPOINT_CREDENTIALS)
        session = boto3.session.Session(region_name=region, **credentials)
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": 2},
            s3={"addressing_style": "path"},
            user_agent_extra="lcm-evidence",
        )
        self.s3 = session.client("s3", endpoint_url=endpoint_url or None, config=config)
        self._bucket_ready = False

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """`PutObject`: store `data` under `key` (overwriting: keys are deterministic, a retry rewrites the same)."""
        self._ensure_bucket()
        self._call("PutObject", Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        """`GetObject`: the object's bytes (`NotFound` when there is none)."""
        return self._call("GetObject", Bucket=self.bucket, Key=key)["Body"].read()

    def exists(self, key: str) -> bool:
        """`HeadObject`: whether `key` holds an object."""
        try:
            self._call("HeadObject", Bucket=self.bucket, Key=key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """`DeleteObject`: remove `key` (deleting a missing key is not an error)."""
        try:
            self._call("DeleteObject", Bucket=self.bucket, Key=key)
        except NotFound:
            return

    def keys(self, prefix: str) -> list[str]:
        """`ListObjectsV2`: every key under `prefix` (an empty list when the bucket does not exist yet)."""
        found: list[str] = []
        token = None
        while True:
            params = {"Bucket": self.bucket, "Prefix": prefix} | ({"ContinuationToken": token} if token else {})
            try:
                page = self._call("ListObjectsV2", **params)
            except NotFound:
                return found
            found += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return found
            token = page.get("NextContinuationToken")

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            self._call("HeadBucket", Bucket=self.bucket)
        except NotFound:
            try:
                self._call("CreateBucket", Bucket=self.bucket)
            except ExternalError as exc:
                if "BucketAlreadyOwnedByYou" not in str(exc):  # made meanwhile by another process
                    raise
            logger.info("evidence bucket %s created", self.bucket)
        self._bucket_ready = True

    def _call(self, operation: str, **params):
        method = getattr(self.s3, {"ListObjectsV2": "list_objects_v2"}.get(operation) or _snake(operation))
        try:
            return method(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{code or status}: {error.get('Message') or ''}".strip()
            if code in _MISSING_BUCKET:
                self._bucket_ready = False
            if code in _MISSING_KEY | _MISSING_BUCKET:
                raise NotFound(SYSTEM, operation, detail, status) from None
            if status is None or status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError"):
                raise Unavailable(SYSTEM, operation, detail, status) from None
            raise ExternalError(SYSTEM, operation, detail, status) from None
        except BotoCoreError as exc:  # connection refused, timeouts, endpoint down
            raise Unavailable(SYSTEM, operation, exc.__class__.__name__) from None


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


_stores: dict[tuple, EvidenceStore] = {}
_stores_lock = threading.Lock()


def evidence_store() -> EvidenceStore:
    """The store from settings, kept per configuration and process (building a boto3 client loads its model)."""
    config = {
        "bucket": settings.LCM_EVIDENCE_BUCKET,
        "endpoint_url": settings.LCM_EVIDENCE_ENDPOINT_URL or settings.LCM_AWS_ENDPOINT_URL or None,
        "region": settings.LCM_AWS_REGION,
        "connect_timeout": settings.LCM_HTTP_CONNECT_TIMEOUT,
        "read_timeout": settings.LCM_HTTP_READ_TIMEOUT,
    }
    key = (os.getpid(), *config.values())
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = EvidenceStore(**config)
        return store
