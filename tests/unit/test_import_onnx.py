"""`arcflow import-model` for ONNX recognition models (insightface's model-pack conventions):
the conventions detected and recorded, a canonical graph that embeds like the source, hostile
or unusable files refused in one line with nothing left behind."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from arcflow.embedding import OnnxEncoder, normalise_crops
from arcflow.errors import ConfigError, DataFormatError, ExportError
from arcflow.export.onnx import CONTRACT, export_onnx, read_metadata
from arcflow.imports import onnx_model
from arcflow.imports.model_import import import_model, read_record
from tests.unit.test_import_model import ROOT, _source

pytestmark = pytest.mark.unit


class _Inside(torch.nn.Module):
    """The source network behind an in-graph normalisation: raw 0..255 pixels in."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - 127.5) / 127.5)


class _Bgr(torch.nn.Module):
    """The source network fed BGR: it flips the channels back."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        return self.model(bgr.flip(1))


#: variant -> (normalisation, batch, colour, opset); "ours" is ArcFlow's own export.
VARIANTS = {
    "inside-fixed": ("inside", "1", "rgb", 11),
    "inside-dynamic": ("inside", "dynamic", "rgb", 13),
    "outside-fixed": ("outside", "1", "rgb", 17),
    "ours": ("outside", "dynamic", "rgb", 18),
    "bgr-fixed": ("outside", "1", "bgr", 11),
}


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    """A small IResNet whose embeddings have a trained model's scale (a few units)."""
    model = _source("iresnet18")
    with torch.no_grad():
        scale = 2.0 / model(torch.from_numpy(_canonical_crops())).abs().max()
        model.features.weight.mul_(scale)
        model.features.bias.mul_(scale)
    return model


@pytest.fixture(scope="module")
def sources(network: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each variant exported once."""
    folder = tmp_path_factory.mktemp("onnx-sources")
    paths = {}
    for name, (normalisation, batch, colour, opset) in VARIANTS.items():
        path = paths[name] = folder / f"{name}.onnx"
        if name == "ours":
            export_onnx(network, path, opset=opset)
            continue
        module = _Inside(network) if normalisation == "inside" else network
        module = _Bgr(module) if colour == "bgr" else module
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated; fast here
            torch.onnx.export(
                module.eval(),
                (torch.zeros(1, 3, 112, 112),),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["input.1"],
                dynamic_axes={"input.1": {0: "None"}} if batch == "dynamic" else None,
            )
        path.write_bytes(buffer.getvalue())
    return paths


def _canonical_crops() -> np.ndarray:
    crops = np.random.default_rng(1).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    return normalise_crops(crops)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_onnx_models_import_to_the_canonical_contract_and_embed_like_their_source(
    variant: str, sources: dict[str, Path], network: torch.nn.Module, tmp_path: Path
) -> None:
    normalisation, batch, colour, opset = VARIANTS[variant]
    out = tmp_path / "out"
    record = import_model(
        str(sources[variant]), out, colour=None if colour == "rgb" else colour, license="MIT"
    )

    assert read_record(out) == record
    assert (record.format, record.file, record.architecture) == ("onnx", "backbone.onnx", "onnx")
    assert record.kwargs == {"embedding_size": 64} and record.stored_dtype == "float32"
    assert sorted(p.name for p in out.iterdir()) == ["backbone.onnx", "import.json"]
    inside = normalisation == "inside"
    assert record.conventions == {
        "input_name": "data" if variant == "ours" else "input.1",
        "input_size": [112, 112],
        "batch": batch,
        "normalisation": normalisation,
        "input_mean": 0.0 if inside else 127.5,
        "input_std": 1.0 if inside else 127.5,
        "colour": colour,
        "colour_from": "default" if colour == "rgb" else "option",
        "output_name": record.conventions["output_name"],
        "embedding_size": 64,
        "opset": opset,
        "batch_handling": "scan" if batch == "1" else "native",
    }

    assert record.parity is not None and record.parity["parity_batch"] == 3
    assert record.parity["max_abs_diff"] <= 1e-4 and record.parity["min_cosine"] > 0.99999

    model = onnx.load(str(out / "backbone.onnx"))
    onnx.checker.check_model(model, full_check=True)
    (data,), (embedding,) = model.graph.input, model.graph.output
    assert (data.name, embedding.name) == ("data", "embedding")
    dims = [d.dim_param or d.dim_value for d in data.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 112, 112]
    metadata = read_metadata(out / "backbone.onnx")
    assert {k: metadata[k] for k in CONTRACT} == CONTRACT
    assert metadata["source"] == str(sources[variant]) and metadata["license"] == "MIT"
    assert json.loads(metadata["conventions"]) == record.conventions

    x = _canonical_crops()
    got = OnnxEncoder(out / "backbone.onnx")(x)
    with torch.no_grad():
        want = network(torch.from_numpy(x)).numpy()
    assert got.shape == (4, 64)
    assert np.abs(got - want).max() <= 1e-4


def _tiny(
    path: Path,
    shape: tuple = (1, 3, 112, 112),
    *,
    opset: int = 11,
    two_outputs: bool = False,
    reshape_to_one: bool = False,
    two_inputs: bool = False,
    output: list | None = None,
) -> Path:
    """A small embedding graph built by hand: Conv, GlobalAveragePool, Flatten -> (N, 8)."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
    ]
    initializers = [weight]
    if reshape_to_one:  # a "dynamic" graph that only works for one image
        nodes.append(helper.make_node("Reshape", ["pooled", "one_by_8"], ["emb"]))
        initializers.append(numpy_helper.from_array(np.array([1, 8], np.int64), "one_by_8"))
    else:
        nodes.append(helper.make_node("Flatten", ["pooled"], ["emb"]))
    output = [shape[0], 8] if output is None else output
    outputs = [helper.make_tensor_value_info("emb", TensorProto.FLOAT, output)]
    if two_outputs:
        outputs.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1]))
    if opset < 9:  # IR 3: initializers are listed as inputs too
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in initializers]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    path.write_bytes(model.SerializeToString())
    return path


def _rows(path: Path, x: np.ndarray) -> np.ndarray:
    """The source run one row at a time on canonical inputs (its convention: outside, RGB)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"x": row[None]})[0] for row in x])


def test_old_opsets_are_upgraded_and_batch1_reshapes_fall_back_to_scan(tmp_path: Path) -> None:
    x = _canonical_crops()
    old = _tiny(tmp_path / "old.onnx", opset=8)
    record = import_model(str(old), tmp_path / "old")
    assert record.conventions["opset"] == 8 and record.conventions["batch_handling"] == "scan"
    got = OnnxEncoder(tmp_path / "old" / "backbone.onnx")(x)
    assert np.abs(got - _rows(old, x)).max() <= 1e-4

    stuck = _tiny(tmp_path / "stuck.onnx", ("N", 3, 112, 112), reshape_to_one=True)
    record = import_model(str(stuck), tmp_path / "stuck")
    assert record.conventions["batch"] == "dynamic"
    assert record.conventions["batch_handling"] == "scan"  # the native batch failed the check
    got = OnnxEncoder(tmp_path / "stuck" / "backbone.onnx")(x)
    assert np.abs(got - _rows(stuck, x)).max() <= 1e-4


def _external(path: Path) -> Path:
    """A model whose weight claims to live in a file outside it."""
    _tiny(path)
    model = onnx.load(str(path))
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"
    path.write_bytes(model.SerializeToString())
    return path


def test_unusable_onnx_files_are_one_clear_error_and_leave_nothing(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    good = sources["inside-fixed"].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    cases = {
        truncated: "not a readable ONNX model \\(truncated or corrupt\\?\\)",
        _tiny(tmp_path / "two.onnx", two_outputs=True): (
            "2 outputs \\(emb, pooled\\): expected one embedding output"
        ),
        _tiny(tmp_path / "wide.onnx", (1, 3, 112, 96)): (
            "input 'x' is \\(1, 3, 112, 96\\): not square \\(H 112 != W 96\\)"
        ),
        _tiny(tmp_path / "big.onnx", (1, 3, 128, 128)): "128x128: ArcFlow's aligned crops are 112",
        _tiny(tmp_path / "gray.onnx", (1, 1, 112, 112)): "expected \\(N, 3, H, W\\)",
        _tiny(tmp_path / "batch8.onnx", (8, 3, 112, 112)): "fixed batch of 8",
        _tiny(tmp_path / "mask.onnx", two_inputs=True): "2 inputs \\(x, mask\\): expected one",
        _tiny(tmp_path / "4d.onnx", output=[1, 8, 1, 1]): (
            "output 'emb' is \\(1, 8, 1, 1\\): expected \\(N, D\\) with a fixed D"
        ),
        _tiny(tmp_path / "d.onnx", output=[1, "D"]): "output 'emb' is \\(1, \\?\\)",
        _external(tmp_path / "external.onnx"): "tensors stored outside the file \\(w\\)",
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    for path, message in cases.items():
        with pytest.raises(DataFormatError, match=message) as caught:
            import_model(str(path), tmp_path / "out")
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="--colour: 'grb' is not one of rgb, bgr"):
        import_model(str(sources["ours"]), tmp_path / "out", colour="grb")
    torch.save({"w": torch.zeros(1)}, tmp_path / "rgb.pth")
    with pytest.raises(ConfigError, match="PyTorch backbones are RGB"):
        import_model(str(tmp_path / "rgb.pth"), tmp_path / "out", colour="bgr")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "rgb.pth"])


def test_files_above_the_protobuf_limit_are_refused_before_parsing(tmp_path: Path) -> None:
    huge = tmp_path / "huge.onnx"
    with open(huge, "wb") as f:  # sparse: no disk used
        f.write(b"\x08")
        f.truncate(onnx_model.MAX_BYTES + 1)
    with pytest.raises(DataFormatError, match="above the 2 GiB"):
        onnx_model.read_model(huge, "huge.onnx")


def test_a_surgery_that_changes_the_embeddings_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canonicalise = onnx_model.canonicalise

    def wrong_channels(model, conv, *, scan):  # forgets the BGR flip
        return canonicalise(model, onnx_model._with(conv, colour="rgb"), scan=scan)

    monkeypatch.setattr(onnx_model, "canonicalise", wrong_channels)
    source = _tiny(tmp_path / "tiny.onnx")
    with pytest.raises(ExportError, match="the canonical model differs from the source by"):
        import_model(str(source), tmp_path / "out", colour="bgr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]


def test_cli_imports_onnx_and_refuses_in_one_line(tmp_path: Path) -> None:
    source = _tiny(tmp_path / "tiny.onnx")
    truncated = tmp_path / "bad.onnx"
    truncated.write_bytes(source.read_bytes()[:100])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "arcflow.cli", "import-model"]
    done = subprocess.run(
        [*cmd, str(source), "--out", str(tmp_path / "tiny"), "--colour", "bgr"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "backbone.onnx: ONNX, 8-d, normalised outside the graph, fixed batch 1 → " in (
        done.stdout
    )
    assert "dynamic (Scan), BGR (option), float32 weights" in done.stdout
    bad = subprocess.run(
        [*cmd, str(truncated), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    (line,) = bad.stderr.strip().splitlines()
    assert line.startswith("error: ") and "bad.onnx: not a readable ONNX model" in line
    assert not (tmp_path / "x").exists()
