"""A model folder written by ``arcflow import-model``: its record and its weights file."""

from __future__ import annotations

from pathlib import Path

from arcflow.errors import DataFormatError
from arcflow.imports.model_import import ImportRecord, read_record

FORMATS = {"pytorch": ".pt", "onnx": ".onnx"}  # format -> the weights file's suffix


def imported_model(folder: str | Path) -> tuple[ImportRecord, Path]:
    """The folder's import record and its weights file (checked to be inside the folder)."""
    folder = Path(folder)
    record = read_record(folder)
    suffix = FORMATS.get(record.format)
    if suffix is None:
        raise DataFormatError(f"{folder}: unknown import format {record.format!r}")
    if Path(record.file).name != record.file or not record.file.endswith(suffix):
        raise DataFormatError(f"{folder}: import.json names {record.file!r}, not a {suffix} file")
    path = folder / record.file
    if not path.is_file():
        raise DataFormatError(f"{folder}: {record.file} is missing", hint="import it again")
    return record, path
