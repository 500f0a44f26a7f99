"""The model card: what a registered face model is, how it was made and measured, its limits.

Written at export from the same documents the run logged (benchmark metrics, set sizes,
thresholds, params, provenance), so its numbers are the run's numbers. It ships inside the
model (``bundle/model_card.md``) and becomes the registry version's description.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DESCRIPTION_LIMIT = 5000  # MLflow's limit on a model version description


@dataclass(frozen=True)
class CardInputs:
    """Everything the card states; each field comes from a file or record of the run."""

    name: str
    train: Mapping[str, Any]  # params.yaml train section
    data_source: str  # align.source and its URI
    synthetic: bool  # trained on SynthFace (a pipeline demonstration)
    metrics: Mapping[str, Any]  # metrics/eval.json
    headlines: Mapping[str, tuple[str, str]]  # benchmark -> (title, headline metric)
    sizes: Mapping[str, Mapping[str, Any]]  # benchmark -> its set's counts
    thresholds: Mapping[str, Any] | None  # metrics/thresholds.json
    provenance: Mapping[str, str]  # git_commit, params_hash, data_version, data.<path>
    run_id: str
    detector: str
    origin: Mapping[str, Any] | None = None  # import.json of a model trained elsewhere


def _imported_model(origin: Mapping[str, Any]) -> list[str]:
    conventions = origin.get("conventions") or {}
    kwargs = origin.get("kwargs") or {}
    arch = origin.get("architecture", "unknown")
    if kwargs.get("width") is not None:
        arch += f" (width ×{kwargs['width']})"
    detected = ", ".join(f"{k} {v}" for k, v in conventions.items())
    return [
        f"- Backbone: {arch}, {kwargs.get('embedding_size', '?')}-d embedding, ONNX (fp32)",
        f"- **Imported**, trained outside ArcFlow: `{origin.get('source', 'unknown')}` "
        f"({origin.get('format', '?')}, {origin.get('stored_dtype', '?')} weights, "
        f"sha256 `{origin.get('sha256', 'unknown')}`)",
        f"- Licence: {origin.get('license') or 'not stated: check it before any use'}",
        *([f"- Source conventions (converted to ArcFlow's input): {detected}"] if detected else []),
    ]


def _loss(train: Mapping[str, Any]) -> str:
    """The head with the margins it trained with (a margin left null: the paper's value)."""
    head = train.get("head", "arcface")
    if head in ("softmax", "none"):
        margins = "no margin"
    else:
        from arcflow.heads.margins import head_margins  # imports torch: only when a card is made

        m1, m2, m3 = head_margins(
            head,
            **{key: train.get(key) for key in ("m", "m1", "m2", "m3")},
            sphereface_psi=train.get("sphereface_psi", "extension"),
        )
        margins = f"m1={m1:g}, m2={m2:g}, m3={m3:g}"
        if head == "sphereface":
            margins += f", psi {train.get('sphereface_psi', 'extension')}, annealed"
    extra = ", ".join(train.get("extra_losses") or []) or "none"
    return f"{head} (s={train.get('s')}, {margins}); extra terms: {extra}"


def set_size(counts: Mapping[str, Any]) -> str:
    """A set's counts in words (``600 pairs``, ``1,200 images, 200 templates``)."""
    parts = [
        f"{value:,} {key.removeprefix('n_').replace('_', ' ')}"
        for key, value in counts.items()
        if isinstance(value, int) and not isinstance(value, bool)
    ]
    return ", ".join(parts) or "–"


def _benchmarks(inputs: CardInputs) -> list[str]:
    rows = ["| benchmark | metric | value | set |", "|---|---|---:|---|"]
    for name, (title, headline) in inputs.headlines.items():
        values = inputs.metrics.get(name)
        if not isinstance(values, Mapping) or headline not in values:
            continue
        value = values[headline]  # a number, or "below resolution" (never made a number)
        shown = value if isinstance(value, str) else f"{float(value):.6g}"
        rows.append(f"| {title} | {headline} | {shown} | {set_size(inputs.sizes.get(name, {}))} |")
    absent = [
        t
        for n, (t, _) in inputs.headlines.items()
        if not isinstance(inputs.metrics.get(n), Mapping)
    ]
    if len(rows) == 2:
        rows.append("| (none scored) | | | |")
    if absent:
        rows += ["", f"Not evaluated (no data): {', '.join(absent)}."]
    return rows


def _thresholds(doc: Mapping[str, Any] | None) -> list[str]:
    if not doc:
        return ["No calibrated thresholds: `same_person` needs an explicit threshold."]
    lines = [
        f"Calibrated on **{doc.get('set')}** ({doc.get('level')} pairs: "
        f"{doc.get('n_genuine', 0):,} genuine, {doc.get('n_impostor', 0):,} impostor); "
        "same person when cosine > threshold.",
        "",
        "| FAR | threshold | measured FAR | TAR |",
        "|---|---:|---:|---:|",
    ]
    for key, entry in (doc.get("thresholds") or {}).items():
        lines.append(
            f"| {key.removeprefix('far_')} | {entry['threshold']:.6f} | "
            f"{entry['far_measured']:.3g} | {entry['tar']:.4f} |"
        )
    lines += [
        f"| {key.removeprefix('far_')} | not resolved | | |" for key in doc.get("unresolved", [])
    ]
    return lines


def _trained_model(train: Mapping[str, Any]) -> list[str]:
    return [
        f"- Backbone: {train.get('backbone')} (width ×{train.get('width')}), "
        f"{train.get('embedding_size')}-d embedding, ONNX (fp32; fp16 variant)",
        f"- Loss: {_loss(train)}",
        f"- Training: {train.get('epochs')} epochs, batch {train.get('batch_size')}, "
        f"lr {train.get('lr')} ({train.get('schedule')})",
    ]


def model_card(inputs: CardInputs) -> str:
    """The card as markdown."""
    origin = inputs.origin
    data_lines = [
        f"- Source: {inputs.data_source}",
        f"- DVC data version: `{inputs.provenance.get('data_version', 'unknown')}`",
        *(
            f"  - `{key.removeprefix('data.')}`: `{value}`"
            for key, value in sorted(inputs.provenance.items())
            if key.startswith("data.")
        ),
    ]
    if origin is not None:
        data_lines = ["- Not known to ArcFlow: see what the model's publisher states"]
    limits = [
        "- Trained on **SynthFace**, procedurally drawn faces: this model demonstrates the "
        "pipeline and is **not** a model for real faces."
        if inputs.synthetic
        else "- Accuracy holds for faces like the training data's; measure on your own "
        "population (age, ethnicity, capture conditions) before relying on a threshold.",
        "- Thresholds hold for the calibration set's conditions; a different population or "
        "capture changes the real false accept rate.",
        "- One face per side in `verify` (the most confident, central one); no liveness or "
        "spoof detection.",
    ]
    lines = [
        f"# Model card: {inputs.name}",
        "",
        "## Model",
        *(_trained_model(inputs.train) if origin is None else _imported_model(origin)),
        f"- Face pipeline: {inputs.detector} detector → 5-point similarity alignment to the "
        "112×112 ArcFace template → embedding with the flip test, L2-normalised; cosine scores",
        "",
        "## Training data",
        *data_lines,
        "",
        "## Benchmarks",
        *_benchmarks(inputs),
        "",
        "## Decision thresholds",
        *_thresholds(inputs.thresholds),
        "",
        "## Intended use",
        "- Face verification (1:1) and identification (1:N search) of consenting subjects, "
        "with a human reviewing consequential decisions.",
        "",
        "## Limits",
        *limits,
        "",
        "## Lineage",
        f"- git commit `{inputs.provenance.get('git_commit', 'unknown')}`",
        f"- params hash `{inputs.provenance.get('params_hash', 'unknown')}`",
        f"- MLflow run `{inputs.run_id}`",
    ]
    return "\n".join(lines) + "\n"


def description(card: str) -> str:
    """The card cut to fit a registry version description, pointing at the full artifact."""
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    tail = "\n\n… (cut; the full card is the model's artifact bundle/model_card.md)\n"
    return card[: DESCRIPTION_LIMIT - len(tail)] + tail
