"""Imported ONNX models: what the import costs and what the canonical graph costs at run time.

PYTHONPATH=. python bench/import_onnx.py                       # iresnet50, 512-d (w600k_r50's size)
PYTHONPATH=. python bench/import_onnx.py --arch iresnet18 --batch 16 --repeats 3

Two insightface-pack-style sources are built from a randomly initialised backbone (the compute
of the real model; the embeddings mean nothing), both normalising raw pixels inside the graph:
one with a fixed batch of 1 (imported as a ``Scan`` over the batch), one with a dynamic batch
(imported as is). For each: the ``import_model`` wall time (read, detect, rewrite, checker,
self-check, atomic write) and images/s of the canonical ``backbone.onnx`` at ``--batch``
through ``OnnxEncoder``, against the source run the way insightface runs it (numpy
preprocessing, then one call per image for the fixed-batch file, one call per batch otherwise).
Median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench._common import machine

ROOT = Path(__file__).resolve().parents[1]


def _images_per_s(fn, batch: int, repeats: int) -> float:
    from arcflow.export.onnx import timed

    return batch / statistics.median(timed(fn, repeats))


def _run_source(session, pixels, one_by_one: bool) -> None:
    """The source as insightface runs it: one call per image (fixed batch) or per batch."""
    for chunk in pixels[:, None] if one_by_one else pixels[None]:
        session.run(None, {"input.1": chunk})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="iresnet50")
    p.add_argument("--embedding-size", type=int, default=512)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import onnxruntime as ort
    import torch

    from arcflow.embedding import OnnxEncoder
    from arcflow.imports.model_import import import_model
    from tests.external_models import PixelInput, save_pack_onnx, trained_looking

    model = trained_looking(args.arch, 0, width=args.width, embedding_size=args.embedding_size)
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, 3, 112, 112)).astype(np.float32)
    pixels = x * np.float32(127.5) + np.float32(127.5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fixed = save_pack_onnx(model, Path(tmp) / "fixed.onnx")
        dynamic = Path(tmp) / "dynamic.onnx"
        torch.onnx.export(
            PixelInput(model).eval(), (torch.zeros(1, 3, 112, 112),), str(dynamic),
            input_names=["input.1"], output_names=["fc1"], opset_version=13, dynamo=False,
            dynamic_axes={"input.1": {0: "n"}, "fc1": {0: "n"}},
        )  # fmt: skip
        for label, source in (("fixed batch 1", fixed), ("dynamic batch", dynamic)):
            start = time.perf_counter()
            record = import_model(str(source), Path(tmp) / f"{source.stem}-imported")
            seconds = time.perf_counter() - start
            canonical = OnnxEncoder(Path(tmp) / f"{source.stem}-imported" / "backbone.onnx")
            session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
            one_by_one = record.conventions["batch"] == "1"
            rows.append(
                {
                    "source": label,
                    "handling": record.conventions["batch_handling"],
                    "import_s": round(seconds, 2),
                    "canonical_images_per_s": round(
                        _images_per_s(partial(canonical, x), args.batch, args.repeats), 1
                    ),
                    "source_images_per_s": round(
                        _images_per_s(
                            partial(_run_source, session, pixels, one_by_one),
                            args.batch,
                            args.repeats,
                        ),
                        1,
                    ),
                    "max_abs_diff": record.parity["max_abs_diff"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    result = {"machine": machine("cpu"), "args": vars(args) | {"json": None}, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
