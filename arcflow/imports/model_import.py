"""``arcflow import-model``: an external model as a model folder every consumer accepts.

The file is fetched through the data sources (https, s3, local; ``sha256`` checked when given)
and read without executing anything. A PyTorch checkpoint
(:mod:`arcflow.imports.torch_checkpoint`) is written atomically as ``<out>/backbone.pt`` (the
train stage's format: evaluate, export and the face service take it as they take a trained
backbone); an ONNX model (:mod:`arcflow.imports.onnx_model`) as ``<out>/backbone.onnx``,
rewritten to ArcFlow's ONNX contract. Either comes with ``<out>/import.json``, the
provenance: source URI, sha256, format, architecture, stored dtype, licence and, for ONNX, the
source graph's conventions.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from arcflow.atomic import atomic_dir
from arcflow.errors import ConfigError, DataFormatError

RECORD_NAME = "import.json"
BACKBONE_NAME = "backbone.pt"
ONNX_NAME = "backbone.onnx"
COLOURS = ("rgb", "bgr")
_ONNX_MAGIC = b"\x08"  # an ONNX ModelProto starts with field 1 (ir_version), varint


@dataclass(frozen=True)
class ImportRecord:
    """The provenance of an imported model (``import.json``)."""

    source: str
    sha256: str
    format: str  # "pytorch" | "onnx"
    architecture: str
    kwargs: dict[str, Any]
    stored_dtype: str
    license: str | None
    file: str = BACKBONE_NAME  # backbone.pt (pytorch) | backbone.onnx (onnx, canonical contract)
    conventions: dict[str, Any] | None = None  # onnx: what the source graph expected
    parity: dict[str, float] | None = None  # onnx: canonical vs source graph, as export reports


def import_model(
    uri: str,
    out: Path,
    *,
    arch: str | None = None,
    sha256: str | None = None,
    license: str | None = None,
    colour: str | None = None,
) -> ImportRecord:
    """Fetch ``uri``, convert it and write the model folder ``out`` (atomically).

    ``colour``: the channel order an ONNX model was trained on (``rgb``, insightface's and the
    default, or ``bgr``); PyTorch backbones are RGB.
    """
    from arcflow.data.sources import Source, fetch

    if colour is not None and colour not in COLOURS:
        raise ConfigError(f"--colour: {colour!r} is not one of {', '.join(COLOURS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.fetch-", dir=out.parent) as tmp:
        try:
            source = Source(name="model", uri=uri, sha256=sha256, extract=False)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        fetched = fetch(source, tmp)
        digest = _sha256(fetched)
        kind = _format(fetched)
        if kind == "onnx":
            if arch is not None:
                raise ConfigError(f"{uri}: --arch applies to PyTorch checkpoints, not ONNX")
            return _import_onnx(fetched, uri, digest, out, license, colour)
        if colour not in (None, "rgb"):
            raise ConfigError(f"{uri}: --colour {colour}: ArcFlow's PyTorch backbones are RGB")
        return _import_pytorch(fetched, uri, digest, out, arch, license)


def _import_onnx(
    path: Path, uri: str, digest: str, out: Path, license: str | None, colour: str | None
) -> ImportRecord:
    import onnx

    from arcflow.imports.onnx_model import convert

    provenance = {"producer": "arcflow import-model", "source": uri, "source_sha256": digest}
    if license is not None:
        provenance["license"] = license
    converted = convert(path, uri, colour=colour, metadata=provenance)
    record = ImportRecord(
        source=uri,
        sha256=digest,
        format="onnx",
        architecture="onnx",
        kwargs={"embedding_size": converted.conventions.embedding_size},
        stored_dtype=converted.stored_dtype,
        license=license,
        file=ONNX_NAME,
        conventions=converted.conventions.as_dict(),
        parity=converted.parity,
    )
    with atomic_dir(out) as tmp:
        onnx.save_model(converted.model, str(tmp / ONNX_NAME), save_as_external_data=False)
        (tmp / RECORD_NAME).write_text(json.dumps(asdict(record), indent=2) + "\n")
    return record


def _import_pytorch(
    path: Path, uri: str, digest: str, out: Path, arch: str | None, license: str | None
) -> ImportRecord:
    from arcflow.imports.torch_checkpoint import infer_architecture, load_module, read_state_dict
    from arcflow.models import canonical_name
    from arcflow.models.saving import save_backbone

    try:
        names = None if arch is None else [canonical_name(arch)]
    except ValueError as exc:
        raise ConfigError(f"--arch: {exc}") from None
    state, dtype = read_state_dict(path)
    architecture = infer_architecture(state, uri, names=names)
    model = load_module(state, architecture, uri)
    record = ImportRecord(
        source=uri,
        sha256=digest,
        format="pytorch",
        architecture=architecture.name,
        kwargs=architecture.kwargs(),
        stored_dtype=dtype,
        license=license,
    )
    with atomic_dir(out) as tmp:
        save_backbone(tmp / BACKBONE_NAME, model, architecture.name, architecture.kwargs())
        (tmp / RECORD_NAME).write_text(json.dumps(asdict(record), indent=2) + "\n")
    return record


def read_record(folder: Path) -> ImportRecord:
    """The ``import.json`` of an imported model folder."""
    path = Path(folder) / RECORD_NAME
    try:
        return ImportRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise DataFormatError(f"{folder}: not an imported model (no {RECORD_NAME})") from None
    except (ValueError, TypeError) as exc:
        raise DataFormatError(f"{path}: not a valid import record ({exc})") from None


def _format(path: Path) -> str:
    """``pytorch`` (a torch.save zip or legacy pickle) or ``onnx``, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return "pytorch"
    if head[:1] == _ONNX_MAGIC:
        return "onnx"
    raise DataFormatError(
        f"{path.name}: neither a PyTorch checkpoint nor an ONNX model (starts {head!r})"
    )


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
