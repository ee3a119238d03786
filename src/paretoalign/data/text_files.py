"""Local text files read as UTF-8: every problem a :class:`~paretoalign.errors.DataError` naming the file and the line.

Shared by the prompt readers (:mod:`.prompt_files`) and the preference-pair readers (:mod:`.preference_pairs`):
:func:`read_text` reads a whole file, :func:`decode_text` decodes bytes read line by line, and
:func:`first_line` quotes a library's exception in one printable line.
"""

from __future__ import annotations

from pathlib import Path

from paretoalign.errors import DataError

__all__ = ["decode_text", "first_line", "read_text"]


def read_text(path: Path) -> str:
    """The file as text; bytes that are not UTF-8, or a NUL byte (a binary file), name their line."""
    try:
        raw = path.read_bytes()
    except OSError as e:  # unreadable, or a directory
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    return decode_text(raw, str(path))


def first_line(e: BaseException) -> str:
    """An exception's first line, control characters escaped (library messages may quote raw bytes)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def decode_text(raw: bytes, name: str, start_line: int = 1) -> str:
    """``raw`` (which starts at line ``start_line`` of file ``name``) decoded as UTF-8, a BOM dropped; else a
    :class:`DataError` naming the line of the first bad byte, or of a NUL byte (a binary file)."""
    if b"\0" in raw:  # text never holds one (UTF-16 files included: they are not UTF-8 either)
        line = start_line + raw[: raw.index(b"\0")].count(b"\n")
        raise DataError(f"{name}, line {line}: a NUL byte; this is a binary file, not UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = start_line + raw[: e.start].count(b"\n")
        raise DataError(f"{name}, line {line}: not valid UTF-8 text (byte 0x{raw[e.start]:02x}); "
                        "save the file as UTF-8") from None
