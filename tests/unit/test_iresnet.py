"""IResNet backbones: shapes, insightface state-dict layout, sizes, fp16 and memory format."""

from __future__ import annotations

import pytest
import torch

from arcflow.models import get_backbone, list_backbones

pytestmark = pytest.mark.unit

LAYERS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet50": (3, 4, 14, 3),
}


def expected_state_shapes(
    layers: tuple[int, ...], width: float = 1.0, embedding_size: int = 512, input_size: int = 112
) -> dict[str, tuple[int, ...]]:
    """Every state-dict key with its shape, enumerated from the insightface layout."""

    def ch(c: int) -> int:
        return max(8, round(c * width))

    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    stem = ch(64)
    shapes["conv1.weight"] = (stem, 3, 3, 3)
    bn("bn1", stem)
    shapes["prelu.weight"] = (stem,)
    inplanes = stem
    for stage, (base, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True), 1):
        planes = ch(base)
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            cin = inplanes if i == 0 else planes
            bn(f"{p}.bn1", cin)
            shapes[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
            bn(f"{p}.bn2", planes)
            shapes[f"{p}.prelu.weight"] = (planes,)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn3", planes)
            if i == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes, cin, 1, 1)
                bn(f"{p}.downsample.1", planes)
        inplanes = planes
    bn("bn2", inplanes)
    side = input_size // 16
    shapes["fc.weight"] = (embedding_size, inplanes * side * side)
    shapes["fc.bias"] = (embedding_size,)
    bn("features", embedding_size)
    return shapes


@pytest.mark.parametrize("width", [1.0, 0.25])
def test_r18_output_shape(width: float) -> None:
    model = get_backbone("iresnet18", width=width).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 512)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["iresnet18", "iresnet50"])
def test_state_dict_keys_and_shapes_match_insightface_layout(name: str) -> None:
    with torch.device("meta"):
        model = get_backbone(name)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expected_state_shapes(LAYERS[name])
    assert set(actual) == set(expected)
    assert actual == expected


@pytest.mark.parametrize(("name", "width"), [("iresnet18", 1.0), ("r50", 0.25)])
def test_load_state_dict_strict_from_enumerated_keys(name: str, width: float) -> None:
    layers = LAYERS[name.replace("r", "iresnet", 1) if name.startswith("r") else name]
    g = torch.Generator().manual_seed(0)
    state = {
        k: torch.tensor(3) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
        for k, s in expected_state_shapes(layers, width=width).items()
    }
    model = get_backbone(name, width=width)
    model.load_state_dict(state, strict=True)
    loaded = model.state_dict()
    assert torch.equal(loaded["fc.weight"], state["fc.weight"])
    assert torch.equal(
        loaded["layer1.0.downsample.0.weight"], state["layer1.0.downsample.0.weight"]
    )


@pytest.mark.parametrize(("name", "millions"), [("iresnet50", 43.6), ("iresnet100", 65.2)])
def test_parameter_count(name: str, millions: float) -> None:
    with torch.device("meta"):  # no allocation, no forward
        model = get_backbone(name)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / 1e6 - millions) / millions < 0.01


def test_features_bn_weight_is_frozen_at_one() -> None:
    model = get_backbone("r18", width=0.25)
    assert model.features.weight.requires_grad is False
    assert torch.all(model.features.weight == 1.0)
    assert model.features.bias.requires_grad


def test_fp16_forward_on_cpu_returns_float32() -> None:
    model = get_backbone(
        "iresnet18", width=0.25, fp16=True, input_size=64
    )  # fp16 convolutions are slow on a CPU
    out = model(torch.randn(2, 3, 64, 64))
    assert out.dtype == torch.float32
    out.sum().backward()
    assert model.conv1.weight.grad is not None
    assert model.conv1.weight.grad.dtype == torch.float32


def test_channels_last_input() -> None:
    model = get_backbone("iresnet18", width=0.25, input_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = model(x.to(memory_format=torch.channels_last))
    assert out.shape == (2, 512)
    torch.testing.assert_close(out / ref.abs().max(), ref / ref.abs().max(), rtol=0, atol=1e-4)


def test_unknown_backbone_raises_value_error() -> None:
    with pytest.raises(ValueError, match="iresnet50"):
        get_backbone("nope")


def test_names_aliases_and_options() -> None:
    assert list_backbones() == [
        "iresnet18",
        "iresnet34",
        "iresnet50",
        "iresnet100",
        "iresnet200",
        "mobilefacenet",
        "mobilefacenet_large",
    ]
    with torch.device("meta"):
        for short in ("r18", "r34", "r50", "r100", "r200"):
            long = short.replace("r", "iresnet")
            assert get_backbone(short).state_dict().keys() == get_backbone(long).state_dict().keys()
        tiny = get_backbone("r18", width=0.05, embedding_size=128, input_size=96)
    assert tiny.conv1.weight.shape[0] == 8  # round(64 * 0.05) = 3, raised to 8
    assert tiny.fc.in_features == 26 * 6 * 6  # round(512 * 0.05) channels, 96 / 16 = 6
    assert tiny.fc.out_features == 128


def test_zero_init_residual_zeroes_last_bn_of_each_block() -> None:
    model = get_backbone("r18", width=0.25, zero_init_residual=True)
    blocks = [m for name, m in model.named_modules() if name.count(".") == 1 and "layer" in name]
    assert len(blocks) == 8
    for block in blocks:
        assert torch.all(block.bn3.weight == 0)
        assert torch.all(block.bn2.weight == 1)
    default = get_backbone("r18", width=0.25)
    assert torch.all(default.layer1[0].bn3.weight == 1)
