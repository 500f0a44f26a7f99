"""MobileFaceNet (mbf): shapes, insightface state-dict layout, sizes, width, fp16 and options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from arcflow.models import get_backbone, list_backbones
from arcflow.models.mobilefacenet import MobileFaceNet

pytestmark = pytest.mark.unit

#: (blocks, scale) of insightface's get_mbf / get_mbf_large.
VARIANTS = {
    "mobilefacenet": ((1, 4, 6, 2), 2),
    "mobilefacenet_large": ((2, 8, 12, 4), 4),
}
ALIASES = {"mbf": "mobilefacenet", "mbf_large": "mobilefacenet_large"}
MBF_PARAMS = 2_059_520  # summed from expected_state_shapes, see test_parameter_count


def expected_state_shapes(
    blocks: tuple[int, int, int, int],
    scale: int,
    width: float = 1.0,
    embedding_size: int = 512,
    input_size: int = 112,
) -> dict[str, tuple[int, ...]]:
    """Every state-dict key with its shape, enumerated from insightface's mobilefacenet layout.

    Trunk ``layers.0..7``: stem ConvBlock(3 -> 64s, 3x3/2); group 0 (a 64-group 3x3 ConvBlock when
    it has one block, else Residual with 128 expansion); DepthWise(64s -> 64s, /2, 128);
    Residual(64s, 128); DepthWise(64s -> 128s, /2, 256); Residual(128s, 256);
    DepthWise(128s -> 128s, /2, 512); Residual(128s, 256). Then conv_sep ConvBlock(128s -> 512)
    and features = GDC: [LinearBlock(512 dw 7x7), Flatten, Linear(512, E, no bias), BN1d(E)].
    ConvBlock = layers[conv, BN, PReLU]; LinearBlock = layers[conv, BN];
    DepthWise = layers[ConvBlock 1x1, ConvBlock dw 3x3, LinearBlock 1x1]; Residual = layers[DW...].
    """

    def ch(c: int) -> int:
        return max(8, round(c * width))

    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    def conv_block(prefix: str, cin: int, cout: int, k: int, groups: int = 1, act: bool = True):
        shapes[f"{prefix}.layers.0.weight"] = (cout, cin // groups, k, k)
        bn(f"{prefix}.layers.1", cout)
        if act:
            shapes[f"{prefix}.layers.2.weight"] = (cout,)

    def depthwise(prefix: str, cin: int, cout: int, hidden: int) -> None:
        conv_block(f"{prefix}.layers.0", cin, hidden, 1)
        conv_block(f"{prefix}.layers.1", hidden, hidden, 3, groups=hidden)
        conv_block(f"{prefix}.layers.2", hidden, cout, 1, act=False)

    def residual(prefix: str, c: int, n: int, hidden: int) -> None:
        for i in range(n):
            depthwise(f"{prefix}.layers.{i}", c, c, hidden)

    low, high = ch(64 * scale), ch(128 * scale)
    conv_block("layers.0", 3, low, 3)
    if blocks[0] == 1:
        assert width == 1.0  # group count under width is an implementation choice
        conv_block("layers.1", low, low, 3, groups=64)
    else:
        residual("layers.1", low, blocks[0], ch(128))
    depthwise("layers.2", low, low, ch(128))
    residual("layers.3", low, blocks[1], ch(128))
    depthwise("layers.4", low, high, ch(256))
    residual("layers.5", high, blocks[2], ch(256))
    depthwise("layers.6", high, high, ch(512))
    residual("layers.7", high, blocks[3], ch(256))
    conv_block("conv_sep", high, ch(512), 1)
    side = -(-input_size // 16)
    conv_block("features.layers.0", ch(512), ch(512), side, groups=ch(512), act=False)
    shapes["features.layers.2.weight"] = (embedding_size, ch(512))
    bn("features.layers.3", embedding_size)
    return shapes


def learnable(shapes: dict[str, tuple[int, ...]]) -> int:
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith(buffers))


def random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        k: torch.tensor(3) if k.endswith("num_batches_tracked") else torch.rand(s, generator=g)
        for k, s in shapes.items()
    }


def test_mbf_output_shape() -> None:
    model = get_backbone("mbf").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 512)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["mobilefacenet", "mobilefacenet_large"])
def test_state_dict_keys_and_shapes_match_insightface_layout(name: str) -> None:
    with torch.device("meta"):
        model = get_backbone(name)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expected_state_shapes(*VARIANTS[name])
    assert set(actual) == set(expected)
    assert actual == expected


@pytest.mark.parametrize("name", ["mbf", "mbf_large"])
def test_load_state_dict_strict_from_enumerated_keys(name: str) -> None:
    state = random_state(expected_state_shapes(*VARIANTS[ALIASES[name]]))
    model = get_backbone(name)
    model.load_state_dict(state, strict=True)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_parameter_count() -> None:
    assert learnable(expected_state_shapes(*VARIANTS["mobilefacenet"])) == MBF_PARAMS
    with torch.device("meta"):
        model = get_backbone("mbf")
        # scale 1 is the original MobileFaceNet size: ~1.2M at 512-d, ~0.99M at 128-d.
        small = MobileFaceNet(scale=1)
    assert sum(p.numel() for p in model.parameters()) == MBF_PARAMS
    assert abs(sum(p.numel() for p in small.parameters()) / 1e6 - 1.2) < 0.01


def test_mbf_multiply_adds_match_published_0_45g() -> None:
    model = get_backbone("mbf").eval()
    macs = 0

    def count(module: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs += out[0].numel() * module.in_channels // module.groups * k
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    for module in model.modules():
        module.register_forward_hook(count)
    with torch.no_grad():
        model(torch.randn(1, 3, 112, 112))
    assert 0.43e9 < macs < 0.46e9  # insightface model zoo: "mobilefacenet-0.45G"


@pytest.mark.parametrize("width", [0.25, 0.1])
def test_width_multiplier_shrinks_and_runs(width: float) -> None:
    model = get_backbone("mbf", width=width, embedding_size=64, input_size=64).eval()
    assert sum(p.numel() for p in model.parameters()) < MBF_PARAMS / 4
    assert model.conv_sep.layers[0].out_channels == max(8, round(512 * width))
    assert model.features.layers[0].layers[0].kernel_size == (4, 4)  # 64 / 16
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 64)
    assert torch.isfinite(out).all()


def test_width_and_input_size_keep_the_enumerated_layout() -> None:
    with torch.device("meta"):
        model = get_backbone("mbf_large", width=0.25, embedding_size=128, input_size=96)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    blocks, scale = VARIANTS["mobilefacenet_large"]
    expected = expected_state_shapes(blocks, scale, 0.25, embedding_size=128, input_size=96)
    assert actual == expected


def test_fp16_forward_on_cpu_returns_float32() -> None:
    model = get_backbone(
        "mbf", width=0.25, fp16=True, input_size=64
    )  # fp16 convolutions are slow on a CPU
    out = model(torch.randn(2, 3, 64, 64))
    assert out.dtype == torch.float32
    out.sum().backward()
    grad = model.layers[0].layers[0].weight.grad
    assert grad is not None
    assert grad.dtype == torch.float32


def test_channels_last_input() -> None:
    model = get_backbone("mbf", width=0.25, input_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out / ref.abs().max(), ref / ref.abs().max(), rtol=0, atol=1e-4)


def test_dropout_is_stateless_and_off_by_default() -> None:
    with torch.device("meta"):
        plain = get_backbone("mbf")
        dropped = get_backbone("mbf", dropout=0.3)
    assert plain.features.dropout.p == 0.0
    assert dropped.features.dropout.p == 0.3
    assert plain.state_dict().keys() == dropped.state_dict().keys()


def test_zero_init_residual_zeroes_last_bn_of_residual_blocks() -> None:
    model = get_backbone("mbf", width=0.25, zero_init_residual=True)
    residual = model.layers[3].layers  # four residual DepthWise blocks
    assert len(residual) == 4
    for block in residual:
        assert torch.all(block.layers[2].layers[1].weight == 0)
        assert torch.all(block.layers[1].layers[1].weight == 1)
    assert torch.all(model.layers[2].layers[2].layers[1].weight == 1)  # downsampling: untouched


def test_names_and_aliases() -> None:
    names = list_backbones()
    assert names[-2:] == ["mobilefacenet", "mobilefacenet_large"]
    assert names[:5] == ["iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200"]
    with torch.device("meta"):
        assert isinstance(get_backbone(" MBF "), MobileFaceNet)
        for alias, name in ALIASES.items():
            assert get_backbone(alias).state_dict().keys() == get_backbone(name).state_dict().keys()
    with pytest.raises(ValueError, match="mbf_large"):
        get_backbone("mbf_small")
