"""Stage leaderboard: the pipeline's model and every imported one, side by side.

Reads each model's evaluate metrics (``metrics/eval.json``, ``metrics/imported/<name>/eval.json``
for each ``imports`` entry) and writes ``reports/leaderboard.md`` and the same table as JSON;
with ``--run``, logs both to the pipeline's MLflow run (``mlflow.log_table``: ``leaderboard.json``)
with the params it used (``imports``, ``registry.model_name``).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from arcflow.atomic import atomic_file, write_json
from arcflow.errors import DataFormatError
from arcflow.evaluate.leaderboard import Entry, leaderboard_markdown, leaderboard_table
from arcflow.tracking.run import resume_run
from arcflow.tracking.stage_params import log_stage_params
from stages.common import log, params, parser, run


def read_object(path: Path, hint: str) -> dict:
    """A JSON object written by an evaluate stage."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataFormatError(f"{path}: not found", hint=hint) from None
    except ValueError as exc:
        raise DataFormatError(f"{path}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise DataFormatError(f"{path}: expected a JSON object")
    return document


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--own", type=Path, default=Path("metrics/eval.json"), help="pipeline's metrics")
    p.add_argument(
        "--details", type=Path, default=Path("metrics/eval_details.json"), help="set sizes"
    )
    p.add_argument("--imported", type=Path, default=Path("metrics/imported"))
    p.add_argument("--out", type=Path, default=Path("reports/leaderboard.md"))
    p.add_argument("--table", type=Path, default=Path("reports/leaderboard.json"))
    p.add_argument("--run", type=Path, help="mlflow_run.json of the pipeline (omit: no MLflow)")
    args = p.parse_args()
    cfg = params(args, "imports", "registry", "tracking")
    entries = [
        Entry(
            f"{cfg.registry.model_name} (this pipeline)",
            "trained by this pipeline",
            "",
            read_object(args.own, "dvc repro evaluate"),
        )
    ]
    for name, spec in cfg.imports.root.items():
        metrics = read_object(
            args.imported / name / "eval.json", f"dvc repro evaluate_imported@{name}"
        )
        entries.append(Entry(name, spec.uri, spec.license or "not stated", metrics))
    sizes = read_object(args.details, "dvc repro evaluate")
    table = leaderboard_table(entries, sizes)
    markdown = leaderboard_markdown(entries, sizes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.out) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    write_json(args.table, table)
    if args.run is not None:
        with resume_run(cfg.tracking, Path.cwd(), args.run):
            used = {
                "imports": cfg.imports.model_dump(mode="json"),
                "registry": {"model_name": cfg.registry.model_name},
            }
            log_stage_params("leaderboard", used)
            mlflow.log_table(table, artifact_file="leaderboard.json")
            mlflow.log_text(markdown, "reports/leaderboard.md")
    log.info("leaderboard: %d models -> %s", len(entries), args.out)


if __name__ == "__main__":
    run(main)
