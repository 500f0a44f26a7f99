"""What every stage shares: argument parsing, params loading, one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from arcflow.config import Params, load_params
from arcflow.failures import one_line_errors

log = logging.getLogger("arcflow")


def parser(description: str) -> argparse.ArgumentParser:
    """A stage's argument parser with the common ``--params`` option."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    return p


def trained_model_args(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--run``: what the train (or an import) stage hands to the stages after."""
    p.add_argument(
        "--model", type=Path, required=True, help="backbone.pt from train, or an imported folder"
    )
    p.add_argument("--run", type=Path, required=True, help="mlflow_run.json from train (or import)")


def calibration_args(p: argparse.ArgumentParser) -> None:
    """``--thresholds`` and ``--eval-details``: what evaluate writes for the face model, and
    export packs into it (with the model card)."""
    p.add_argument(
        "--thresholds",
        type=Path,
        default=Path("metrics/thresholds.json"),
        help="decision thresholds calibrated on the largest verification protocol",
    )
    p.add_argument(
        "--eval-details",
        type=Path,
        default=Path("metrics/eval_details.json"),
        help="each benchmark's counts (set sizes) and reference values, for the model card",
    )


def params(args: argparse.Namespace, *sections: str) -> Params:
    """Load and validate the sections this stage reads."""
    return load_params(args.params, sections)


def run(main: Callable[[], None]) -> NoReturn:
    """Run a stage: expected failures print ``error: …`` and ``hint: …`` and exit 1.

    Anything else is a bug and keeps its traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with one_line_errors(missing_hint="run the upstream stage first (dvc repro <stage>)"):
        main()
    sys.exit(0)
