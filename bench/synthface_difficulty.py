"""How hard each SynthFace evaluation set is for a model: the headline of every benchmark at
given per-set difficulties, through the real stages (download → align → evaluate).

PYTHONPATH=. python bench/synthface_difficulty.py --model models/backbone.pt
PYTHONPATH=. python bench/synthface_difficulty.py --model models/backbone.pt \\
    --set lfw=0.8 --set ijb=0.75 --set ytf=0.6

Without ``--set`` the difficulties of params.yaml (``eval_difficulty``) are measured. The
training images are generated too (the download stage writes the whole release) but not used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HEADLINES = {
    "lfw": "accuracy",
    "cfp_fp": "accuracy",
    "agedb_30": "accuracy",
    "ytf": "accuracy",
    "megaface": "rank1",
    "ijbc": "tar_far_1e-4",
}


def _stage(name: str, *args: str | Path, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path.cwd()), "ARCFLOW_PROGRESS": "0"}
    cmd = [sys.executable, "-m", f"stages.{name}", *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"stages.{name} failed:\n{proc.stderr[-2000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="backbone.pt or an .onnx export")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--set", action="append", default=[], help="set=difficulty, e.g. lfw=0.8")
    args = p.parse_args()
    params = yaml.safe_load(args.params.read_text())
    options = params["data"]["sources"]["synthface"]["options"]
    for item in args.set:
        name, value = item.split("=")
        options["eval_difficulty"][name] = float(value)
    with tempfile.TemporaryDirectory(prefix="synthface-difficulty-") as tmp:
        work = Path(tmp)
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        params_arg = ("--params", work / "params.yaml")
        started = time.perf_counter()
        _stage("download", *params_arg, "--source", "synthface", "--out", work / "raw", cwd=work)
        _stage(
            "align", *params_arg, "--raw", work / "raw", "--out", work / "train",
            "--eval-out", work / "eval", cwd=work,
        )  # fmt: skip
        _stage("evaluate", *params_arg, "--data", work / "eval", "--model", args.model.resolve(),
               cwd=work)  # fmt: skip
        scored = json.loads((work / "metrics" / "eval.json").read_text())
        details = json.loads((work / "metrics" / "eval_details.json").read_text())
    print(f"eval_difficulty: {options['eval_difficulty']}")
    print(f"{'benchmark':<10} {'headline':<14} {'value':>8}  set")
    for name, metric in HEADLINES.items():
        value = scored[name][metric]
        shown = value if isinstance(value, str) else f"{100 * value:.2f}"
        print(f"{name:<10} {metric:<14} {shown:>8}  {details.get(name, {})}")
    print(f"{time.perf_counter() - started:.0f} s (download + align + evaluate)")


if __name__ == "__main__":
    main()
