"""``train.precision``: what ``auto`` resolves to on CUDA and on CPUs with and without bf16."""

from __future__ import annotations

import pytest
import torch

from arcflow import devices
from arcflow.config import TrainParams
from arcflow.train.loop import autocast_dtype, precision_name

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def cpu_bf16(monkeypatch: pytest.MonkeyPatch):
    """Pretend the CPU has (or lacks) native bf16: ``cpu_bf16(True)``."""

    def set_native(avx512_bf16: bool, amx: bool = False) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)

    return set_native


@pytest.mark.parametrize(("avx512_bf16", "amx"), [(True, False), (False, True)])
def test_auto_is_bf16_on_a_cpu_that_computes_it_natively(cpu_bf16, avx512_bf16, amx) -> None:
    cpu_bf16(avx512_bf16, amx)
    assert devices.cpu_has_native_bf16()
    assert autocast_dtype(TrainParams(), CPU) is torch.bfloat16
    assert precision_name(TrainParams(), CPU) == "bf16"


def test_auto_is_fp32_on_a_cpu_without_native_bf16(cpu_bf16) -> None:
    cpu_bf16(False)
    assert autocast_dtype(TrainParams(), CPU) is None
    assert precision_name(TrainParams(), CPU) == "fp32"


def test_a_torch_without_the_cpu_probes_means_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert not devices.cpu_has_native_bf16()
    assert precision_name(TrainParams(), CPU) == "fp32"


def test_auto_is_bf16_on_cuda_whatever_the_cpu(cpu_bf16) -> None:
    cpu_bf16(False)
    assert precision_name(TrainParams(), CUDA) == "bf16"


@pytest.mark.parametrize("explicit", ["fp32", "bf16", "fp16"])
def test_an_explicit_precision_is_kept_on_any_device(cpu_bf16, explicit: str) -> None:
    cpu_bf16(True)
    for device in (CPU, CUDA):
        assert precision_name(TrainParams(precision=explicit), device) == explicit
