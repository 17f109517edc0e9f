"""Bytes of uploaded and produced files, kept apart from their metadata in the database.

One interface (:class:`FileStore`), two stores chosen by ``Settings.storage_url``: a local
directory (a mount shared by several hosts) and S3-compatible object storage. Keys are ids
this server generated (never user input), so no key can reach a path outside the store.
A file is either complete or absent: local writes go to a temporary name and are renamed
into place; S3 objects appear when their (multipart) upload completes. Reads and writes
stream in chunks; memory holds at most one part.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

if TYPE_CHECKING:
    from batch_server.config import Settings

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
CHUNK = 1024 * 1024
S3_PART = 8 * 1024 * 1024  # multipart upload part size (S3's minimum is 5 MiB)


def check_key(key: str) -> str:
    if not _SAFE_KEY.match(key):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Writer(Protocol):
    """What :meth:`FileStore.writer` gives: bytes go in, ``tell`` counts them."""

    def write(self, data: bytes, /) -> int: ...

    def tell(self) -> int: ...


class FileStore(Protocol):
    def writer(self, key: str) -> AbstractContextManager[Writer]:
        """Open ``key`` for writing; the bytes become visible when the block ends cleanly."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A seekable, buffered reader of ``key`` (supports iterating over lines)."""
        ...

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream ``key`` (or the byte range ``[start, end)``) in chunks."""
        ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def __hash__(self) -> int:
        """Stores are hashable (by identity): caches of file contents key on them."""
        ...


def make_store(settings: Settings) -> FileStore:
    """The store named by ``settings.storage_url`` (default: ``data_dir/files``)."""
    url = settings.storage_url
    if url and url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return S3FileStore(bucket, prefix, endpoint_url=settings.s3_endpoint_url)
    return LocalFileStore(Path(url) if url else settings.files_dir)


class LocalFileStore:
    """A local directory (which may be a mount shared by several hosts)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key[-2:] / check_key(key)

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + ".part")
        try:
            with open(tmp, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self.open(key) as fh:
            fh.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                chunk = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


class S3FileStore:
    """Objects ``<prefix>/<key>`` in an S3 bucket (AWS, MinIO, Ceph, moto, …). Credentials
    and region come from boto3's usual sources (``AWS_*`` variables, profiles, roles)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        if not bucket:
            raise ValueError("storage_url must name a bucket: s3://BUCKET[/PREFIX]")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as exc:
            raise RuntimeError(f"S3 bucket {bucket!r} is not reachable: {exc}") from exc

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def writer(self, key: str) -> Iterator[Writer]:
        out = _MultipartWriter(self.client, self.bucket, self._key(key))
        try:
            yield out
            out.finish()
        except BaseException:
            out.abort()
            raise

    def open(self, key: str) -> BinaryIO:
        raw = _RangeReader(self.client, self.bucket, self._key(key), self.size(key))
        return io.BufferedReader(raw, CHUNK)

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if end is not None and end <= start:
            return
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        body = self.client.get_object(**args)["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


class _MultipartWriter:
    """Buffers one part at a time: a small object is one ``PutObject``, a large one a
    multipart upload that becomes visible only when completed."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.buffer = bytearray()
        self.written = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.written += len(data)
        while len(self.buffer) >= S3_PART:
            self._upload_part(bytes(self.buffer[:S3_PART]))
            del self.buffer[:S3_PART]
        return len(data)

    def tell(self) -> int:
        return self.written

    def _upload_part(self, data: bytes) -> None:
        if self.upload_id is None:
            created = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
            self.upload_id = created["UploadId"]
        number = len(self.parts) + 1
        etag = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )["ETag"]
        self.parts.append({"ETag": etag, "PartNumber": number})

    def finish(self) -> None:
        if self.upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
            return
        if self.buffer:
            self._upload_part(bytes(self.buffer))
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )

    def abort(self) -> None:
        if self.upload_id is not None:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )


class _RangeReader(io.RawIOBase):
    """A seekable raw reader over one object: each seek starts a ranged GET, reads stream
    from its body."""

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        self.client, self.bucket, self.key, self.length = client, bucket, key, size
        self.pos = 0
        self.body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        target = max(0, base + offset)
        if target != self.pos:
            self._drop_body()
            self.pos = target
        return self.pos

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.length:
            return 0
        data = b""
        for _ in range(2):  # a stream that ended early is reopened once at the position
            if self.body is None:
                self.body = self.client.get_object(
                    Bucket=self.bucket, Key=self.key, Range=f"bytes={self.pos}-"
                )["Body"]
            data = self.body.read(len(buffer))
            if data:
                break
            self._drop_body()
        if not data:
            raise OSError(f"S3 object {self.key} ended at byte {self.pos} of {self.length}")
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def _drop_body(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None

    def close(self) -> None:
        self._drop_body()
        super().close()
