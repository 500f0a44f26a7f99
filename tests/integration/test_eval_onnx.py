"""Features from the exported ONNX model equal the PyTorch model's, through the same embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from arcflow.data.transforms import encode_jpeg
from arcflow.errors import ConfigError, DataFormatError
from arcflow.evaluate.embed import OnnxEncoder, TorchEncoder, embed_images, load_encoder
from arcflow.export.onnx import export_onnx

pytestmark = pytest.mark.integration


def _tiny_backbone() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=4, bias=False),
        nn.BatchNorm2d(8),
        nn.PReLU(8),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(128, 16),
    ).eval()


def test_onnx_features_match_pytorch(tmp_path: Path) -> None:
    model = _tiny_backbone()
    export_onnx(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    crops = [encode_jpeg(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(5)]
    kwargs = {"batch_size": 3, "flip": True}
    ours = embed_images(TorchEncoder(model), lambda a, b: crops[a:b], 5, **kwargs)
    onnx = OnnxEncoder(tmp_path / "m.onnx")
    theirs = embed_images(onnx, lambda a, b: crops[a:b], 5, **kwargs)
    np.testing.assert_allclose(theirs.plain, ours.plain, atol=1e-4)
    np.testing.assert_allclose(theirs.flipped, ours.flipped, atol=1e-4)
    np.testing.assert_allclose(theirs.combined(), ours.combined(), atol=1e-5)
    assert onnx.key.startswith("onnx-") and load_encoder(tmp_path / "m.onnx").key == onnx.key


def test_bad_model_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(DataFormatError, match=r"bad\.onnx"):
        load_encoder(tmp_path / "bad.onnx")
    with pytest.raises(ConfigError, match=r"model\.h5: not a model this can load") as err:
        load_encoder(tmp_path / "model.h5")
    assert ".onnx" in err.value.hint and "models:/" in err.value.hint
