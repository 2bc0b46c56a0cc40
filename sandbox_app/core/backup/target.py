"""Where backups go: a directory or an S3 bucket, seen as a flat store of named objects.

The engine only ever writes whole objects under opaque names (``config``, ``data/ab/<id>``,
``snapshots/<id>``), so both targets need just put, get and list. A put is atomic on both
(a temporary file renamed into place; an S3 PUT), so an interrupted backup leaves complete
objects or none.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import Any, Protocol

from ..errors import BlankSlateError, UsageError
from .credentials import S3Credentials


class BackupError(BlankSlateError):
    """The backup target is unreachable, missing or holds something that does not verify."""

    exit_code = 9


class MissingObject(BackupError):
    """An object the backup needs is not on the target."""


class Target(Protocol):
    """A flat store of named objects."""

    description: str

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes: ...

    def list(self, prefix: str) -> dict[str, int]:
        """Every object whose name starts with ``prefix``: name → size."""
        ...

    def ensure(self) -> None:
        """Create the directory or bucket if it does not exist (for a first backup)."""
        ...

    def exists(self) -> bool:
        """Whether the directory or bucket is there."""
        ...


class DirTarget:
    """Objects as files under a directory (a USB disk, a mounted share)."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self.description = str(self.root)

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*name.split("/"))

    def exists(self) -> bool:
        return self.root.is_dir()

    def ensure(self) -> None:
        if not self.root.parent.is_dir():
            raise BackupError(f"backup target {self.root}: its parent directory does not exist")
        self.root.mkdir(mode=0o700, exist_ok=True)

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise MissingObject(f"object {name} is missing from {self.description}") from None

    def list(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(folder) if folder else self.root
        if not base.is_dir():
            return out
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                if f.startswith("."):
                    continue  # a put that never finished
                path = Path(dirpath) / f
                name = path.relative_to(self.root).as_posix()
                if name.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        out[name] = path.stat().st_size
        return out


class S3Target:
    """Objects in an S3 bucket under a prefix (AWS, SeaweedFS, MinIO…), through boto3.

    Endpoint: ``endpoint`` (``--s3-endpoint``), else ``AWS_ENDPOINT_URL``, else AWS.
    Credentials: ``credentials`` (the app's, from the keyring), else the usual AWS way
    (environment, ``~/.aws``); the region the usual AWS way.
    """

    def __init__(self, url: str, endpoint: str | None = None,
                 credentials: S3Credentials | None = None) -> None:
        rest = url[len("s3://"):]
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise BackupError(f"'{url}': an S3 target is s3://BUCKET or s3://BUCKET/PREFIX")
        self.prefix = prefix.strip("/")
        self.description = url
        import boto3  # noqa: PLC0415  (only when S3 is used: boto3 takes ~0.3 s to import)
        from botocore.config import Config  # noqa: PLC0415

        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
        session = boto3.session.Session(
            aws_access_key_id=credentials.access_key_id if credentials else None,
            aws_secret_access_key=credentials.secret_access_key if credentials else None)
        self._client: Any = session.client(
            "s3", endpoint_url=endpoint,
            region_name=session.region_name or "us-east-1",
            config=Config(max_pool_connections=32, connect_timeout=5, read_timeout=60,
                          retries={"max_attempts": 3, "mode": "standard"}))
        self._endpoint = endpoint or "AWS"

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _error(self, exc: Exception, what: str) -> BackupError:  # noqa: PLR0911
        from botocore.exceptions import (  # noqa: PLC0415
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
        )

        if isinstance(exc, NoCredentialsError):
            return BackupError("no S3 credentials: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, configure ~/.aws/credentials, or "
                               "enter them in the app's Backup settings")
        if isinstance(exc, EndpointConnectionError):
            return BackupError(f"cannot reach the S3 endpoint {self._endpoint}")
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchBucket",):
                return BackupError(f"bucket '{self.bucket}' does not exist "
                                   f"at {self._endpoint}")
            if code in ("NoSuchKey", "404"):
                return MissingObject(f"object {what} is missing from {self.description}")
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                return BackupError(f"S3 refused access to {self.description} ({code}): "
                                   "check the credentials")
            return BackupError(f"S3 error on {what}: {code or exc}")
        return BackupError(f"S3 error on {what}: {type(exc).__name__}: {exc}".splitlines()[0])

    def _call(self, what: str, fn: Any, **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            return fn(**kw)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, what) from None

    def exists(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise self._error(exc, "the bucket") from None
        except BotoCoreError as exc:
            raise self._error(exc, "the bucket") from None
        return True

    def ensure(self) -> None:
        if not self.exists():
            self._call("the bucket", self._client.create_bucket, Bucket=self.bucket)

    def put(self, name: str, data: bytes) -> None:
        self._call(name, self._client.put_object, Bucket=self.bucket, Key=self._key(name),
                   Body=data)

    def get(self, name: str) -> bytes:
        resp = self._call(name, self._client.get_object, Bucket=self.bucket,
                          Key=self._key(name))
        body: bytes = self._call(name, resp["Body"].read)
        return body

    def list(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self._client.get_paginator("list_objects_v2")
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    out[obj["Key"][strip:]] = int(obj["Size"])
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "the listing") from None
        return out


def open_target(spec: str, s3_endpoint: str | None = None,
                credentials: S3Credentials | None = None) -> Target:
    """``s3://BUCKET/PREFIX`` or a directory path (``credentials``: for S3 only)."""
    if spec.startswith("s3://"):
        return S3Target(spec, s3_endpoint, credentials)
    if "://" in spec:
        raise BackupError(f"'{spec}': a target is a directory or s3://BUCKET/PREFIX")
    return DirTarget(Path(spec).expanduser())


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ENDPOINT = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[^\s]*)?")


def check_target_spec(spec: str) -> str:
    """``spec`` as a saved setting may hold it: s3://BUCKET[/PREFIX] with a valid bucket
    name, or an absolute folder path (``~`` allowed); UsageError (one line) otherwise."""
    spec = spec.strip()
    if spec.startswith("s3://"):
        bucket, _, _prefix = spec[len("s3://"):].partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise UsageError(f"'{spec}': an S3 target is s3://BUCKET/PREFIX, the bucket 3 to "
                             "63 lower-case letters, digits, dots and dashes")
        return spec
    if "://" in spec:
        raise UsageError(f"'{spec}': a target is a folder or s3://BUCKET/PREFIX")
    if any(ord(c) < 32 for c in spec) or not Path(spec).expanduser().is_absolute():
        raise UsageError(f"'{spec}': give the backup folder's full path (e.g. /media/usb/backup)")
    return spec


def check_endpoint(url: str) -> str:
    """An S3 endpoint URL (http:// or https://, a host and maybe a port), or ""."""
    url = url.strip()
    if url and not _ENDPOINT.fullmatch(url):
        raise UsageError(f"'{url}': an S3 endpoint is a URL such as https://s3.example.com")
    return url
