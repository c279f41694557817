"""What an upload really is: its name's extension and its first bytes must agree.

An upload is accepted only when its extension is allowed (`FILES_ALLOWED_EXTENSIONS`) and its
content, sniffed from the first `SNIFF_BYTES`, is that type: a PNG must start like a PNG.
puremagic (a pure-Python port of libmagic's signatures) names binary formats; text types
(`txt`, `csv`) must be UTF-8 without NUL and must not look like markup or a script, which a
browser or a shell could be tricked into running. Executables are named as such in the
refusal. The stored content type is the one of the allowlist, never the client's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import puremagic

SNIFF_BYTES = 8192


@dataclass(frozen=True, slots=True)
class FileType:
    """An accepted kind of file."""

    content_type: str
    text: bool = False  # no signature: checked as clean UTF-8 text instead


#: Extension -> the type its content must sniff as (every KNOWN_FILE_EXTENSIONS entry).
FILE_TYPES: dict[str, FileType] = {
    "png": FileType("image/png"),
    "jpg": FileType("image/jpeg"),
    "jpeg": FileType("image/jpeg"),
    "gif": FileType("image/gif"),
    "webp": FileType("image/webp"),
    "pdf": FileType("application/pdf"),
    "txt": FileType("text/plain; charset=utf-8", text=True),
    "csv": FileType("text/csv; charset=utf-8", text=True),
}

_EXECUTABLE_SIGNATURES = (
    b"MZ",  # Windows PE / DOS
    b"\x7fELF",  # Linux
    b"\xfe\xed\xfa\xce",  # Mach-O, 32 and 64 bit, both byte orders, and fat binaries
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"#!",  # scripts
)
_MARKUP = re.compile(
    rb"^\s*(<!doctype|<html|<head|<body|<script|<svg|<\?xml|<\?php|<iframe|<object|<embed)",
    re.IGNORECASE,
)


class RefusedContentError(ValueError):
    """The content does not match an allowed type; the message says why."""


def extension_of(filename: str) -> str:
    """The lower-case extension without its dot (`""` when there is none)."""
    _, dot, extension = filename.rpartition(".")
    return extension.lower() if dot else ""


def _sniffed_types(head: bytes) -> set[str]:
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return set()
    if not matches:
        return set()
    best = max(match.confidence for match in matches)
    return {match.mime_type for match in matches if match.confidence == best and match.mime_type}


def _is_clean_text(head: bytes, complete: bool) -> bool:
    if b"\x00" in head or _MARKUP.match(head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A head cut in the middle of a multi-byte character is still text.
        return not complete and error.start >= len(head) - 3 and error.reason.startswith("unex")
    return True


def check_content(filename: str, head: bytes, *, allowed: list[str], complete: bool) -> FileType:
    """The type of an upload named `filename` starting with `head`, or RefusedContentError.

    `complete` says `head` is the whole file (a short text may then not end mid-character).
    """
    extension = extension_of(filename)
    file_type = FILE_TYPES.get(extension)
    if file_type is None or extension not in allowed:
        raise RefusedContentError(
            f"Files of type {extension or '(none)'!r} are not accepted; "
            f"allowed: {', '.join(sorted(allowed))}."
        )
    if head.startswith(_EXECUTABLE_SIGNATURES):
        raise RefusedContentError("Executables and scripts are not accepted.")
    if file_type.text:
        if _sniffed_types(head) - {"text/plain", "text/csv"} or not _is_clean_text(head, complete):
            raise RefusedContentError(
                f"The content is not plain UTF-8 text, as .{extension} must be."
            )
    elif file_type.content_type not in _sniffed_types(head):
        raise RefusedContentError(
            f"The content is not {file_type.content_type}, as .{extension} must be."
        )
    return file_type
