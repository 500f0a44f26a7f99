"""What a pipeline run produced, in a dozen lines: ``arcflow summary`` (the end of ``make run``).

``dvc metrics show`` prints every metric of every file in one row. This picks the numbers a
reader checks first (each benchmark's headline, training, export), the logged model's MLflow
URI and where the reports are. :func:`summarize` is pure; :func:`read_outputs` reads the files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcflow.errors import ArcFlowError
from arcflow.evaluate.report import NOT_AVAILABLE
from arcflow.evaluate.resolution import BELOW_RESOLUTION, set_size

#: The pipeline outputs the summary reads, and the DVC stage that writes each.
EVAL = Path("metrics/eval.json")
EVAL_DETAILS = Path("metrics/eval_details.json")
TRAIN = Path("metrics/train.json")
EXPORT = Path("metrics/export.json")
MODEL = Path("models/onnx_model.json")
STAGES = {
    EVAL: "evaluate",
    EVAL_DETAILS: "evaluate",
    TRAIN: "train",
    EXPORT: "export",
    MODEL: "export",
}
REPORTS = (Path("reports/evaluation.md"), Path("reports/leaderboard.md"))

_TAR = ("tar_far_1e-4", "tar_far_1e-5")

#: Per benchmark of ``eval.json``, in the paper's order: its title and the metrics shown.
HEADLINES: dict[str, tuple[str, tuple[str, ...]]] = {
    "lfw": ("LFW", ("accuracy",)),
    "cfp_fp": ("CFP-FP", ("accuracy",)),
    "cfp_ff": ("CFP-FF", ("accuracy",)),
    "agedb_30": ("AgeDB-30", ("accuracy",)),
    "calfw": ("CALFW", ("accuracy",)),
    "cplfw": ("CPLFW", ("accuracy",)),
    "vgg2_fp": ("VGG2-FP", ("accuracy",)),
    "ytf": ("YTF", ("accuracy",)),
    "megaface": ("MegaFace", ("rank1",)),
    "ijbb": ("IJB-B", _TAR),
    "ijbc": ("IJB-C", _TAR),
    "trillion_pairs": ("Trillion-Pairs", ("ver_tpr_fpr_1e-9",)),
    "iqiyi_vid": ("iQIYI-VID", ("map_at_100",)),
}

_AT_RATE = re.compile(r"^(?:ver_)?(?:tar_far|tpr_fpr)_(?P<rate>.+)$")
_RANK1_AT = re.compile(r"^rank1_(?P<size>\d+)$")


@dataclass(frozen=True)
class RunOutputs:
    """The documents a run wrote (as parsed JSON) and which reports exist."""

    eval: Mapping[str, Any]
    train: Mapping[str, Any]
    export: Mapping[str, Any]
    model: Mapping[str, Any]
    eval_details: Mapping[str, Any] = field(default_factory=dict)
    reports: Mapping[str, bool] = field(default_factory=dict)


def _label(metric: str) -> str:
    """``tar_far_1e-4`` -> ``TAR@FAR=1e-4``; ``rank1`` -> ``rank-1``."""
    match = _AT_RATE.match(metric)
    if match:
        kind = "TPR@FPR" if "tpr_fpr" in metric else "TAR@FAR"
        return f"{kind}={match['rate']}"
    return {"rank1": "rank-1", "map_at_100": "mAP@100"}.get(metric, metric)


def _value(metrics: Mapping[str, Any], key: str) -> str:
    """One metric in %; the evaluation's words (``below resolution``) kept as they are."""
    value = metrics.get(key)
    if isinstance(value, bool) or value is None:
        return "–"
    if isinstance(value, str):
        far = metrics.get("resolution_far")
        if value == BELOW_RESOLUTION and isinstance(far, int | float):
            return f"{value} (the set resolves FAR ≥ {far:.2g})"
        return value
    text = f"{100 * float(value):.2f}"
    spread = metrics.get(f"{key}_std")
    if isinstance(spread, int | float) and not isinstance(spread, bool):
        text += f" ± {100 * float(spread):.2f}"
    return text


def _distractors(metrics: Mapping[str, Any], details: Mapping[str, Any]) -> int | None:
    """MegaFace's distractor count: its largest ``rank1_<size>`` list (what ``rank1`` is read
    at), else the count its details give."""
    sizes = [int(m["size"]) for key in metrics if (m := _RANK1_AT.match(key))]
    if sizes:
        return max(sizes)
    return set_size("megaface", details).get("n_distractors")


def benchmark_line(
    name: str, metrics: Mapping[str, Any], details: Mapping[str, Any] | None = None
) -> str:
    """``<title>  <metric> <value>[, …]`` for one benchmark's entry of ``eval.json``."""
    title, keys = HEADLINES[name]
    parts = []
    for key in keys:
        part = f"{_label(key)} {_value(metrics, key)}"
        if name == "megaface" and key == "rank1":
            count = _distractors(metrics, details or {})
            part += f" @ {count:,} distractors" if count else ""
        parts.append(part)
    return f"  {title:<15}{', '.join(parts)}"


def _number(document: Mapping[str, Any], key: str, spec: str) -> str:
    value = document.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return "–"


def summarize(outputs: RunOutputs, *, tracking_uri: str | None = None) -> str:
    """The summary text: benchmarks (values in %), training, export, the model, the reports."""
    lines = [f"Benchmarks ({EVAL}; values in %):"]
    absent = []
    for name, (title, _) in HEADLINES.items():
        metrics = outputs.eval.get(name)
        if isinstance(metrics, Mapping):
            lines.append(benchmark_line(name, metrics, outputs.eval_details.get(name)))
        elif metrics == NOT_AVAILABLE:
            absent.append(title)
        elif metrics is not None:
            lines.append(f"  {title:<15}{metrics}")
    others = [name for name in outputs.eval if name not in HEADLINES]
    if absent:
        lines.append(f"  {NOT_AVAILABLE}: {', '.join(absent)}")
    if others:
        lines.append(f"  also in {EVAL}: {', '.join(others)}")
    train, export = outputs.train, outputs.export
    steps, loss = _number(train, "steps", "d"), _number(train, "final_loss", ".4f")
    speed = _number(train, "images_per_second", ".1f")
    lines.append(f"Training ({TRAIN}): {steps} steps, final loss {loss}, {speed} images/s")
    opset, cosine = _number(export, "opset", "d"), _number(export, "min_cosine", ".7f")
    onnx_ms = _number(export, "onnx_latency_ms_median", ".2f")
    torch_ms = _number(export, "torch_latency_ms_median", ".2f")
    lines.append(
        f"Export ({EXPORT}): ONNX opset {opset}, parity min cosine {cosine}, "
        f"{onnx_ms} ms median (PyTorch {torch_ms} ms)"
    )
    model_id = outputs.model.get("model_id")
    uri = outputs.model.get("model_uri") or (f"models:/{model_id}" if model_id else "–")
    where = f" (tracking store {tracking_uri})" if tracking_uri else ""
    lines.append(f"MLflow model: {uri}{where}")
    reports = [
        f"{path}" + ("" if there else " (not written)") for path, there in outputs.reports.items()
    ]
    lines.append(f"Reports: {', '.join(reports) if reports else '–'}")
    return "\n".join(lines) + "\n"


def _read_json(path: Path, relative: Path) -> Mapping[str, Any]:
    """A pipeline output as a JSON object; a missing or broken one is an :class:`ArcFlowError`
    naming the file and the stage that writes it."""
    produce = f"the {STAGES[relative]} stage writes it; run `dvc repro` (or `make run`)"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArcFlowError(f"{relative} not found: {produce}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArcFlowError(f"{relative} is not valid JSON ({exc}): {produce}") from None
    if not isinstance(document, dict):
        raise ArcFlowError(f"{relative} is not a JSON object: {produce}")
    return document


def read_outputs(root: Path = Path("."), reports: Sequence[Path] = REPORTS) -> RunOutputs:
    """The outputs of the run in the checkout at ``root``; ``eval_details.json`` may be absent
    (it only adds MegaFace's distractor count when ``eval.json`` lacks it)."""
    required = {path: _read_json(root / path, path) for path in (EVAL, TRAIN, EXPORT, MODEL)}
    details: Mapping[str, Any] = {}
    if (root / EVAL_DETAILS).is_file():
        details = _read_json(root / EVAL_DETAILS, EVAL_DETAILS)
    return RunOutputs(
        eval=required[EVAL],
        train=required[TRAIN],
        export=required[EXPORT],
        model=required[MODEL],
        eval_details=details,
        reports={str(path): (root / path).is_file() for path in reports},
    )
