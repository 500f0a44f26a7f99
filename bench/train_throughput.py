"""Training throughput of a backbone + ArcFace head: images/s, and MFU on CUDA.

python bench/train_throughput.py --backbone iresnet18 --width 0.25 --batch 32
python bench/train_throughput.py --backbone iresnet100 --batch 128 --device cuda --bf16
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from arcflow.devices import resolve_device
from arcflow.heads import build_head
from arcflow.models import get_backbone

#: Dense bf16 peak of the chips we report MFU for (TFLOP/s, without sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def forward_flops(model: torch.nn.Module, size: int = 112) -> float:
    """Forward FLOPs (2 x multiply-adds) of one image, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backbone", default="iresnet18")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()

    device = resolve_device(args.device)
    model = get_backbone(args.backbone, width=args.width)
    flops = forward_flops(model)
    model = model.to(device, memory_format=torch.channels_last).train()
    head = build_head("arcface", 512, args.classes, s=64.0, m=0.5).to(device)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, 112, 112, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, args.classes, (args.batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            emb = model(x)
        loss = F.cross_entropy(head(emb.float(), y), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    rate = args.batch / seconds
    line = (
        f"{args.backbone} width={args.width} batch={args.batch} device={device.type} "
        f"bf16={args.bf16}: {rate:.1f} img/s, {flops / 1e9:.2f} GFLOP/img forward"
    )
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        achieved = 3 * flops * rate / 1e12  # forward + backward ~ 3x forward
        mfu = f", MFU {100 * achieved / peak:.1f}% of {peak:.0f} TFLOP/s" if peak else ""
        mem = torch.cuda.max_memory_allocated() / 2**30
        line += f", {achieved:.0f} TFLOP/s{mfu}, peak memory {mem:.1f} GiB ({name})"
    print(line)


if __name__ == "__main__":
    main()
