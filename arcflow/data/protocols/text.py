"""Reading the text files of benchmark protocols, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

from arcflow.errors import DataFormatError


def read_text(path: str | Path) -> str:
    """The UTF-8 text of ``path``; a missing file or bad byte is a DataFormatError."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataFormatError(f"{path}: missing") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: byte offset {exc.start}: not UTF-8 text") from None


def text_lines(path: str | Path) -> list[str]:
    """Lines of ``path`` (any line ending), without trailing blank lines."""
    lines = read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def exact_lines(path: str | Path) -> list[str]:
    """Lines of ``path`` split on ``\\n`` only, as written (the final newline is optional)."""
    lines = read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines
