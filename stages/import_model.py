"""Stage import@<name>: a model trained elsewhere (params ``imports.<name>``) as a model folder.

``arcflow import-model`` does the work (fetch through the data sources, checksum, safe load,
architecture or ONNX conventions detected, atomic write); this stage also opens the model's
own MLflow run, which its evaluate and export stages log into like the pipeline's run, with the
provenance as params (``import.*``, also the artifact ``params/import.yaml``) and tags (source,
licence, the git commit and whether the tree was dirty).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from arcflow.errors import ConfigError
from arcflow.imports.model_import import import_model
from arcflow.tracking.provenance import dvc_experiment_tags, git_state
from arcflow.tracking.run import start_run
from arcflow.tracking.stage_params import log_stage_params
from stages.common import log, params, parser, run

RUN_FILE = "mlflow_run.json"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--name", required=True, help="the imports entry")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    args = p.parse_args()
    cfg = params(args, "imports", "tracking")
    spec = cfg.imports.root.get(args.name)
    if spec is None:
        known = ", ".join(cfg.imports.root) or "none"
        raise ConfigError(f"{args.params}: imports.{args.name}: no such entry (have: {known})")
    record = import_model(
        spec.uri,
        args.out,
        arch=spec.arch,
        sha256=spec.sha256,
        license=spec.license,
        colour=spec.colour,
    )
    tags = {
        "arcflow.stage": "import",
        **git_state().tags(),
        **dvc_experiment_tags(),
        "arcflow.imported": "true",
        "arcflow.import.source": record.source,
        "arcflow.import.license": record.license or "not stated",
    }
    with start_run(
        cfg.tracking, Path.cwd(), args.out / RUN_FILE, run_name=f"import:{args.name}", tags=tags
    ):
        log_stage_params("import", {"import": {**asdict(record), "name": args.name}})
    log.info(
        "import@%s: %s %s from %s (sha256 %s…)",
        args.name,
        record.format,
        record.architecture,
        record.source,
        record.sha256[:16],
    )


if __name__ == "__main__":
    run(main)
