"""Where finished recordings are kept: a local directory, or an S3-compatible object store.

Every recording is first written to a local spool file (``server.recorder``). With local
storage the spool file *is* the recording. With S3 it is uploaded when the session ends
(boto3's managed transfer: multipart above 8 MiB), to a key derived from the session id only,
so an upload that is repeated after a failure or a restart overwrites the same object: uploads
are idempotent. The methods here are blocking (files, boto3); the recordings service runs them
in worker threads.

The destination is chosen per session by :meth:`RecordingStorages.destination`: today from the
server's ``--recordings`` option; a session preference (``s3BucketName``/``s3KeyPrefix`` of
``SSM-SessionManagerRunShell``) can name another bucket and prefix through the same call.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from hatchway.errors import ConfigError, NotFound, Unavailable
from hatchway.store.recordings import Storage

if TYPE_CHECKING:
    from hatchway.server.settings import ServerSettings

log = logging.getLogger(__name__)

__all__ = ["Destination", "RecordingStorages", "S3Location", "parse_recordings_option"]

#: Recordings larger than this go up in parts of this size (S3's minimum part is 5 MiB).
MULTIPART_CHUNK: Final = 8 * 1024 * 1024
SUFFIX: Final = ".cast"


@dataclass(frozen=True, slots=True)
class S3Location:
    """An object (or, with an empty key, a bucket and prefix) in the object store."""

    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Read ``s3://bucket/key-or-prefix``.

        Raises:
            ConfigError: not such a URL, or no bucket.
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"expected s3://BUCKET[/PREFIX], not {url!r}")
        return cls(parts.netloc, parts.path.lstrip("/"))


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one session's recording goes: ``s3`` (bucket and key prefix) or local."""

    storage: Storage
    s3: S3Location | None = None

    def location(self, session_id: str, spool_path: Path) -> str:
        """The finished recording's location for the row (a path, or ``s3://bucket/key``)."""
        if self.s3 is None:
            return str(spool_path)
        prefix = self.s3.key.strip("/")
        key = f"{prefix}/{session_id}{SUFFIX}" if prefix else f"{session_id}{SUFFIX}"
        return S3Location(self.s3.bucket, key).url


def parse_recordings_option(value: str | None) -> Destination:
    """The server's default destination from ``--recordings`` (``None``: local).

    Raises:
        ConfigError: a value that is neither ``local`` nor ``s3://BUCKET[/PREFIX]``.
    """
    if value is None or value == "local":
        return Destination(Storage.LOCAL)
    if value.startswith("s3://"):
        return Destination(Storage.S3, S3Location.parse(value))
    raise ConfigError(f"--recordings must be 'local' or s3://BUCKET[/PREFIX], not {value!r}")


class RecordingStorages:
    """Reads and uploads recordings; one S3 client, made on first use.

    Args:
        spool_dir: the local directory of spool files (and of local recordings), ``0700``.
        default: where recordings go unless a preference says otherwise.
        endpoint_url, region: of the S3-compatible store (``None``: boto3's defaults).
        credentials: access key id and secret for the store; ``None``: boto3's usual chain
            (environment, shared files, instance metadata).
    """

    def __init__(
        self,
        spool_dir: Path,
        default: Destination,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.spool_dir = spool_dir
        self.default = default
        self._endpoint_url = endpoint_url
        self._region = region
        self._credentials = credentials
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> RecordingStorages:
        credentials = None
        if settings.recordings_access_key_id and settings.recordings_secret_access_key:
            credentials = (
                settings.recordings_access_key_id,
                settings.recordings_secret_access_key,
            )
        return cls(
            settings.recordings_dir,
            parse_recordings_option(settings.recordings),
            endpoint_url=settings.recordings_endpoint_url,
            region=settings.recordings_region,
            credentials=credentials,
        )

    def destination(self, *, s3_bucket: str = "", s3_prefix: str = "") -> Destination:
        """Where a new session's recording goes: a bucket named by the session's preferences,
        else the server's default."""
        if s3_bucket:
            return Destination(Storage.S3, S3Location(s3_bucket, s3_prefix))
        return self.default

    def spool_path(self, session_id: str) -> Path:
        return self.spool_dir / f"{session_id}{SUFFIX}"

    # ---- blocking operations (worker threads) ----------------------------------------------

    def upload(self, spool_path: Path, location: str) -> None:
        """Put the spool file at ``location`` (same key every time: idempotent).

        Raises:
            Unavailable: the store refused or could not be reached (try again later).
            NotFound: the spool file is gone.
        """
        target = S3Location.parse(location)
        if not spool_path.exists():
            raise NotFound(f"the spool file {spool_path} of {location} is missing")
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        config = TransferConfig(
            multipart_threshold=MULTIPART_CHUNK, multipart_chunksize=MULTIPART_CHUNK
        )
        try:
            self._s3().upload_file(
                str(spool_path),
                target.bucket,
                target.key,
                ExtraArgs={"ContentType": "application/x-asciicast"},
                Config=config,
            )
        except (BotoCoreError, ClientError, OSError) as exc:
            raise Unavailable(f"cannot upload {location}: {_describe(exc)}") from exc

    def read(self, storage: Storage, location: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the recording from ``offset``.

        Raises:
            NotFound: the recording is not there.
            Unavailable: the store could not be reached.
        """
        if storage is Storage.LOCAL:
            return read_file(Path(location), offset, length)
        target = S3Location.parse(location)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._s3().get_object(
                Bucket=target.bucket, Key=target.key, Range=f"bytes={offset}-{offset + length - 1}"
            )
            return bytes(response["Body"].read())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "InvalidRange":
                return b""
            if code in ("NoSuchKey", "404", "NoSuchBucket"):
                raise NotFound(f"the recording is missing from {location}") from exc
            raise Unavailable(f"cannot read {location}: {_describe(exc)}") from exc
        except BotoCoreError as exc:
            raise Unavailable(f"cannot read {location}: {_describe(exc)}") from exc

    def delete(self, storage: Storage, location: str) -> None:
        """Remove a finished recording (the retention job); one already gone is no error.

        Raises:
            Unavailable: the file could not be removed or the store could not be reached.
        """
        if storage is Storage.LOCAL:
            path = Path(location)
            try:
                path.unlink(missing_ok=True)
                path.with_name(path.name + ".state").unlink(missing_ok=True)
            except OSError as exc:
                raise Unavailable(f"cannot delete {path.name}: {exc.strerror or exc}") from exc
            return
        target = S3Location.parse(location)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._s3().delete_object(Bucket=target.bucket, Key=target.key)
        except (BotoCoreError, ClientError) as exc:
            raise Unavailable(f"cannot delete {location}: {_describe(exc)}") from exc

    def _s3(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError as exc:  # pragma: no cover - the test extra installs it
                raise ConfigError("S3 recordings need boto3: pip install 'hatchway[s3]'") from exc
            from botocore.config import Config

            kwargs: dict[str, Any] = {
                "endpoint_url": self._endpoint_url,
                "region_name": self._region,
                "config": Config(
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=30,
                ),
            }
            if self._credentials is not None:
                kwargs["aws_access_key_id"] = self._credentials[0]
                kwargs["aws_secret_access_key"] = self._credentials[1]
            self._client = boto3.session.Session().client("s3", **kwargs)
        return self._client


def read_file(path: Path, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes of ``path`` from ``offset`` (never follows a symlink).

    Raises:
        NotFound: no such file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise NotFound(f"the recording file {path.name} is missing") from exc
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def _describe(exc: BaseException) -> str:
    """The error without secrets: botocore's messages name no credentials."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__
