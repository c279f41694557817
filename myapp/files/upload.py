"""Receive a `multipart/form-data` upload straight into blob storage, chunk by chunk.

Werkzeug's form parser would buffer the part in memory or spool it to a temporary file
before the view sees it. Here the request body is read in `FILES_CHUNK_BYTES` chunks and
fed to werkzeug's sans-IO multipart decoder; the file part's bytes go to the storage writer
as they arrive, through a SHA-256 and a byte counter. Memory stays at a few chunks (plus one
S3 part) whatever the size.

Order of checks: the declared `Content-Length` against the limit (413 before a byte is
read), then the first `SNIFF_BYTES` against the allowlist (415 before anything is stored),
then the running size against the limit (413, the partial blob removed). Any failure after
the writer opened aborts it: no partial blob is ever left under a key.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from typing import BinaryIO

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import (
    Data,
    Epilogue,
    Field,
    File,
    MultipartDecoder,
    NeedData,
)

from myapp.core.blobs import BlobWriter, Storage, new_key
from myapp.core.concurrency import cooperate
from myapp.core.errors import AppError
from myapp.files.sniff import SNIFF_BYTES, FileType, RefusedContentError, check_content

FIELD = "file"
#: Room for the multipart framing (boundaries, part headers) on top of the file itself.
FRAMING_ALLOWANCE = 16 * 1024
MAX_FILENAME = 255
#: What the decoder may hold beyond one chunk read (part headers, a boundary's tail); a
#: body that makes it buffer more (no boundary in sight) is refused as too large.
_DECODER_SLACK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ReceivedBlob:
    """A stored upload, not yet recorded in the database."""

    key: str
    filename: str
    content_type: str
    size: int
    sha256: str


def clean_filename(raw: str | None) -> str:
    """The name to keep: no directories, no control characters, at most 255 characters."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip().lstrip(".").strip()
    if len(name) > MAX_FILENAME:
        stem, dot, extension = name.rpartition(".")
        keep = MAX_FILENAME - len(extension) - 1
        name = f"{stem[:keep]}.{extension}" if dot and 0 < len(extension) < 16 else name[:255]
    return name or "file"


def too_large(limit: int) -> AppError:
    """413 naming the limit."""
    return AppError("PAYLOAD_TOO_LARGE", f"Files are limited to {limit} bytes.")


def _validation(message: str) -> AppError:
    return AppError("VALIDATION_FAILED", details=[{"field": FIELD, "message": message}])


class _Receiver:
    """State of one upload while the body streams in."""

    def __init__(self, store: Storage, *, limit: int, allowed: list[str]) -> None:
        self.store, self.limit, self.allowed = store, limit, allowed
        self.filename: str | None = None
        self.head = bytearray()
        self.file_type: FileType | None = None
        self.writer: BlobWriter | None = None
        self.key = new_key()
        self.size = 0
        self.digest = hashlib.sha256()
        self.done = False

    def start(self, event: File) -> None:
        if event.name != FIELD:
            raise AppError(
                "VALIDATION_FAILED", details=[{"field": event.name, "message": "Unknown field."}]
            )
        if self.filename is not None:
            raise _validation("Send exactly one file.")
        self.filename = clean_filename(event.filename)

    def _open(self, complete: bool) -> None:
        try:
            self.file_type = check_content(
                self.filename or "", bytes(self.head), allowed=self.allowed, complete=complete
            )
        except RefusedContentError as error:
            raise AppError("UNSUPPORTED_MEDIA_TYPE", str(error)) from None
        self.writer = self.store.writer(self.key, content_type=self.file_type.content_type)
        self.writer.write(bytes(self.head))
        self.head.clear()

    def data(self, chunk: bytes, *, more: bool) -> None:
        self.size += len(chunk)
        if self.size == 0 and not more:
            raise _validation("The file is empty.")
        if self.size > self.limit:
            raise too_large(self.limit)
        self.digest.update(chunk)
        if self.writer is None:
            self.head += chunk
            if len(self.head) >= SNIFF_BYTES or not more:
                self._open(complete=not more)
        elif chunk:
            self.writer.write(chunk)
        if not more:
            self.done = True

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _events(stream: BinaryIO, decoder: MultipartDecoder, chunk_bytes: int):  # noqa: ANN202
    """Decoder events until the epilogue; 400 for a malformed body or one that ends early."""
    finished = False
    while True:
        try:
            event = decoder.next_event()
        except ValueError:  # the decoder's verdict on a malformed body
            raise AppError("BAD_REQUEST", "Malformed multipart body.") from None
        if isinstance(event, Epilogue):
            return
        if not isinstance(event, NeedData):
            yield event
            continue
        if finished:
            raise AppError("BAD_REQUEST", "The multipart body ended early.")
        chunk = stream.read(chunk_bytes)
        finished = not chunk
        decoder.receive_data(chunk or None)
        cooperate()  # a fast client always has data waiting: never hold the worker


def receive_upload(  # noqa: PLR0913 - one request's limits
    stream: BinaryIO,
    boundary: bytes,
    store: Storage,
    *,
    limit: int,
    allowed: list[str],
    chunk_bytes: int,
) -> ReceivedBlob:
    """Stream the `file` part of a multipart body into `store` and describe what was kept.

    Raises AppError (400, 413, 415, 422) with nothing left in the store.
    """
    receiver = _Receiver(store, limit=limit, allowed=allowed)
    decoder = MultipartDecoder(
        boundary, max_form_memory_size=chunk_bytes + _DECODER_SLACK, max_parts=8
    )
    try:
        for event in _events(stream, decoder, chunk_bytes):
            if isinstance(event, File):
                receiver.start(event)
            elif isinstance(event, Field):
                raise AppError(
                    "VALIDATION_FAILED",
                    details=[{"field": event.name, "message": "Unknown field."}],
                )
            elif isinstance(event, Data) and receiver.filename is not None and not receiver.done:
                receiver.data(event.data, more=event.more_data)
        if not receiver.done or receiver.writer is None or receiver.file_type is None:
            raise _validation("Missing data for required field.")
        receiver.writer.commit()
    except RequestEntityTooLarge:
        receiver.abort()
        raise too_large(limit) from None
    except BaseException:
        receiver.abort()
        raise
    return ReceivedBlob(
        key=receiver.key,
        filename=receiver.filename or "file",
        content_type=receiver.file_type.content_type,
        size=receiver.size,
        sha256=receiver.digest.hexdigest(),
    )
