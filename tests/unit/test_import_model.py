"""`arcflow import-model` for PyTorch checkpoints in insightface's layouts: architecture
inferred from the weights, embeddings equal to the source module's, hostile files refused."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arcflow.errors import ArcFlowError, DataFormatError
from arcflow.imports.model_import import import_model, read_record
from arcflow.models.saving import load_backbone
from tests.external_models import trained_looking

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {  # small instances of each family: (name, kwargs)
    "iresnet18": {"width": 0.25, "embedding_size": 64},
    "iresnet34": {"width": 0.125, "embedding_size": 32},
    "mobilefacenet": {"width": 0.5, "embedding_size": 128},
}


def _source(name: str) -> torch.nn.Module:
    return trained_looking(name, 0, **SOURCES[name])


def _crops() -> torch.Tensor:
    return torch.rand(4, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("name", sorted(SOURCES))
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("layout", ["bare", "wrapped", "ddp"])
def test_checkpoints_import_without_arch_and_embed_like_their_source(
    name: str, dtype: str, layout: str, tmp_path: Path
) -> None:
    source = _source(name)
    state = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v
             for k, v in source.state_dict().items()}  # fmt: skip
    if layout == "ddp":
        state = {f"module.{k}": v for k, v in state.items()}
    blob = {"epoch": 3, "state_dict": state} if layout == "wrapped" else state
    torch.save(blob, tmp_path / "backbone.pth")

    record = import_model(str(tmp_path / "backbone.pth"), tmp_path / "out", license="MIT")
    assert record.architecture == name and record.stored_dtype == dtype
    assert record.kwargs == {k: float(v) if k == "width" else v for k, v in SOURCES[name].items()}
    digest = hashlib.sha256((tmp_path / "backbone.pth").read_bytes()).hexdigest()
    assert read_record(tmp_path / "out") == record and record.sha256 == digest
    assert json.loads((tmp_path / "out" / "import.json").read_text())["license"] == "MIT"

    imported = load_backbone(tmp_path / "out" / "backbone.pt")  # what evaluate and export read
    if dtype == "float16":  # the reference: the source with its fp16-rounded weights
        source.load_state_dict({k.removeprefix("module."): v.float() for k, v in state.items()})
    with torch.no_grad():
        torch.testing.assert_close(imported(_crops()), source(_crops()), rtol=0, atol=1e-5)


def test_arch_given_must_match_the_weights(tmp_path: Path) -> None:
    torch.save(_source("iresnet18").state_dict(), tmp_path / "m.pth")
    assert import_model(str(tmp_path / "m.pth"), tmp_path / "a", arch="r18").architecture == (
        "iresnet18"
    )
    with pytest.raises(DataFormatError, match=r"closest is iresnet34: missing layer1\.2"):
        import_model(str(tmp_path / "m.pth"), tmp_path / "b", arch="iresnet34")
    with pytest.raises(ArcFlowError, match="--arch: unknown backbone 'resnet9'"):
        import_model(str(tmp_path / "m.pth"), tmp_path / "c", arch="resnet9")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "m.pth"]


class _Payload:
    """A pickle that would create a file when loaded without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_hostile_and_wrong_files_are_one_clear_error_and_leave_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save(_source("iresnet18").state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    marker = tmp_path / "executed"
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": _Payload(marker)}, pickled)
    unknown = tmp_path / "unknown.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 4)).state_dict(), unknown)
    not_a_model = tmp_path / "notes.pth"
    not_a_model.write_bytes(b"hello, this is text")
    cases = {
        truncated: "not a readable PyTorch checkpoint",
        pickled: "not a tensors-only checkpoint, refused without running it",
        unknown: "not a known architecture; closest is",
        not_a_model: "neither a PyTorch checkpoint nor an ONNX model",
    }
    for path, message in cases.items():
        with pytest.raises(ArcFlowError, match=message):
            import_model(str(path), tmp_path / "out")
    assert not marker.exists()  # nothing in the pickle ran
    with pytest.raises(ArcFlowError, match="sha256"):
        import_model(str(good), tmp_path / "out", sha256="0" * 64)
    leftovers = {p.name for p in tmp_path.iterdir()} - {p.name for p in [good, *cases]}
    assert leftovers == set()  # no model folder, no staging directory


def test_cli_imports_and_refuses_in_one_line(tmp_path: Path) -> None:
    torch.save({"model": _source("mobilefacenet").state_dict()}, tmp_path / "mbf.pth")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "arcflow.cli", "import-model"]
    done = subprocess.run(
        [*cmd, str(tmp_path / "mbf.pth"), "--out", str(tmp_path / "mbf"), "--license", "CC-BY"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mobilefacenet (width=0.5, embedding_size=128) from pytorch float32" in done.stdout
    missing = subprocess.run(
        [*cmd, str(tmp_path / "nope.pth"), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.startswith("error: ") and "nope.pth" in missing.stderr
    bad_digest = subprocess.run(
        [*cmd, str(tmp_path / "mbf.pth"), "--out", str(tmp_path / "y"), "--sha256", "xyz"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert bad_digest.returncode == 1 and "Traceback" not in bad_digest.stderr


def test_evaluate_takes_the_model_folder_and_refuses_a_record_pointing_outside(
    tmp_path: Path,
) -> None:
    from arcflow.evaluate.embed import load_encoder
    from arcflow.imports.folder import imported_model

    source = _source("iresnet18")
    torch.save(source.state_dict(), tmp_path / "m.pth")
    folder = tmp_path / "out"
    import_model(str(tmp_path / "m.pth"), folder)
    batch = _crops().numpy()
    with torch.no_grad():
        expected = source(_crops()).numpy()
    # channels_last on the CPU sums in another order: float32 rounding of large activations
    torch.testing.assert_close(load_encoder(folder)(batch), expected, rtol=1e-3, atol=1e-3)
    record = json.loads((folder / "import.json").read_text())
    for file, message in (("../m.pth", "not a .pt file"), ("gone.pt", "gone.pt is missing")):
        (folder / "import.json").write_text(json.dumps({**record, "file": file}))
        with pytest.raises(DataFormatError, match=message):
            imported_model(folder)
