"""Reading text files: UTF-8 or one error naming the file and the byte offset."""

from __future__ import annotations

import codecs

from ..errors import EttinError


def not_utf8(path: str, offset: int, line: int | None = None) -> EttinError:
    where = f"byte offset {offset}" + (f", line {line}" if line else "")
    return EttinError(f"{path}: not UTF-8 text ({where}); expected UTF-8 encoded text")


def check_utf8(path: str, chunk_bytes: int = 16 * 2**20) -> None:
    """Refuse a file that is not UTF-8 before a builder reads it (Arrow's JSON reader keeps invalid bytes, which
    fail later, far from the file); one streaming pass, a small cost beside the parse."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # of the next chunk
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            pending = len(decoder.getstate()[0])  # the last chunk's unfinished character, decoded with this one
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise not_utf8(path, offset - pending + error.start) from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise not_utf8(path, offset - len(error.object) + error.start) from None


def text_lines(path: str):
    """(line number, line) of a UTF-8 text file, one line in memory at a time; bytes that are not UTF-8 are one
    error naming the file and the byte offset."""
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise not_utf8(path, offset + error.start, number) from None
            offset += len(raw)
