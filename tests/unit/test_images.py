"""infra/*Dockerfile: the images of the compose stack, and what the training image shares with
the development venv (scripts/setup_venv.sh): the face detectors, the optional groups.

No Docker engine here: the Dockerfiles are read as text, the commands they run that can run
here do (the requirement list the training image installs, its entrypoint with real git in
temporary repositories), and the setup script runs with a fake Python that records pip calls.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shlex
import stat
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.test_compose import (
    INFRA,
    ROOT,
    env_example,
    environment,
    filled_env,
    resolve,
    services,
)

pytestmark = pytest.mark.unit

DETECTORS_FILE = ROOT / "requirements" / "detectors.txt"
SETUP_SCRIPT = ROOT / "scripts" / "setup_venv.sh"
ENTRYPOINT = INFRA / "trainer" / "entrypoint.sh"
DETECTOR_PINS = {"retinaface-pytorch": "0.0.8", "facenet-pytorch": "2.6.0"}


@cache
def training_dockerfile() -> str:
    return (INFRA / "Dockerfile").read_text()


def dockerfile_args(text: str) -> dict[str, str]:
    """``ARG NAME=value`` defaults (a quoted value loses its quotes)."""
    found = re.findall(r'^ARG (\w+)=("[^"\n]*"|\S+)$', text, flags=re.M)
    return {name: value.strip('"') for name, value in found}


@cache
def pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@cache
def detector_requirements() -> dict[str, tuple[str, list[str]]]:
    """requirements/detectors.txt: name -> (pinned version, sha256 hashes)."""
    text = re.sub(r"\\\n", " ", DETECTORS_FILE.read_text())
    found: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = shlex.split(line)
        requirement = Requirement(spec)
        pins = [s.version for s in requirement.specifier if s.operator == "=="]
        assert len(pins) == 1 and len(requirement.specifier) == 1, f"pin {spec} exactly"
        hashes = [o.removeprefix("--hash=sha256:") for o in options]
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), line
        found[canonicalize_name(requirement.name)] = (pins[0], hashes)
    return found


# --- the training image ---------------------------------------------------------------------


def test_training_image_is_cuda_pytorch_with_the_project_installed() -> None:
    text = training_dockerfile()
    bases = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(bases) == 1
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda1[2-9]\.\d+-cudnn\d+-runtime", bases[0])
    # the repository (with .git) at /opt/arcflow, installed; /workspace is the checkout
    assert re.search(r"^COPY \. /opt/arcflow$", text, flags=re.M)
    assert re.search(r"pip install --no-deps /opt/arcflow\b", text)
    assert re.search(r"^WORKDIR /workspace$", text, flags=re.M)
    assert re.search(r"apt-get install [^\n]*\bgit\b", text)
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert not {".git", ".git/", "infra", "infra/", "requirements", "requirements/"} & set(
        dockerignore
    )
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    # dvc comes with the project's own dependencies
    assert any(r.startswith("dvc[s3]") for r in pyproject()["dependencies"])
    # MLflow and Prefect clients follow the servers' versions
    env = env_example()
    args = dockerfile_args(text)
    assert args["MLFLOW_VERSION"] == env["MLFLOW_VERSION"]
    assert args["PREFECT_VERSION"] == env["PREFECT_VERSION"]
    assert "mlflow==%s" in text and "prefect==%s" in text


def test_training_image_installs_the_detectors_from_the_setup_scripts_file() -> None:
    """One list of detector pins: the file both the image and the venv install, --no-deps."""
    text = training_dockerfile()
    copies = re.findall(r"^COPY ([^\n]+)$", text, flags=re.M)
    copied = next(c for c in copies if "requirements/detectors.txt" in c).split()
    destination = copied[-1].rstrip("/")
    assert re.search(
        rf"pip install --no-deps -r {re.escape(destination)}/detectors\.txt\b", text
    ), "the image must install requirements/detectors.txt with --no-deps"
    # and fails its build when they do not import
    assert re.search(r'python -c "import [^"]*\bfacenet_pytorch\b', text)
    assert re.search(r'python -c "import [^"]*\bretinaface\.network\b', text)

    script = SETUP_SCRIPT.read_text()
    assert re.search(r"^DETECTORS=requirements/detectors\.txt$", script, flags=re.M)
    assert re.search(r'install -q --no-deps -r "\$DETECTORS"', script)
    # nobody pins a detector on the side
    for name in ("retinaface-pytorch==", "facenet-pytorch=="):
        assert name not in text and name not in script, name


def test_detector_pins_are_hashed_and_agree_with_the_code() -> None:
    found = detector_requirements()
    assert {name: version for name, (version, _) in found.items()} == DETECTOR_PINS
    assert all(hashes for _, hashes in found.values()), "every pin carries its wheel's hash"
    from arcflow.align.detectors.mtcnn import FACENET_REQUIREMENT
    from arcflow.serve.pyfunc import DETECTOR_REQUIREMENTS

    pinned = {f"{name}=={version}" for name, version in DETECTOR_PINS.items()}
    assert FACENET_REQUIREMENT in pinned
    for backend in ("mtcnn", "retinaface"):
        named = {r for r in DETECTOR_REQUIREMENTS[backend] if "pytorch==" in r}
        assert named and named <= pinned, backend
    for name, version in DETECTOR_PINS.items():  # the venv holds what the file pins
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        assert installed == version, f"{name} {installed} in the venv; run make setup"


def requirements_the_image_installs(tmp_path: Path) -> list[Requirement]:
    """Run the training image's own snippet that lists the project's requirements."""
    text = training_dockerfile()
    snippet = re.search(r'python -c "([^"]+)"\s*\\\n\s*> /tmp/arcflow/requirements\.txt', text)
    assert snippet, "the image lists its requirements with a python -c snippet"
    copy = tmp_path / "pyproject.toml"
    copy.write_bytes((ROOT / "pyproject.toml").read_bytes())
    code = snippet[1].replace("/tmp/arcflow/pyproject.toml", str(copy))
    extras = dockerfile_args(text)["ARCFLOW_EXTRAS"]
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "ARCFLOW_EXTRAS": extras},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [Requirement(line) for line in out.splitlines() if line.strip()]


def test_training_image_installs_the_gpu_and_detectors_groups(tmp_path: Path) -> None:
    installed = requirements_the_image_installs(tmp_path)
    names = {canonicalize_name(r.name) for r in installed}
    project = pyproject()
    for group in ("gpu", "detectors"):
        wanted = {
            canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"][group]
        }
        assert wanted and wanted <= names, group
    assert "nvidia-ml-py" in names  # pynvml: MLflow's GPU system metrics
    assert {canonicalize_name(Requirement(r).name) for r in project["dependencies"]} <= names
    # NVML reaches the container only with the driver's "utility" capability
    capabilities = re.search(r"^ENV NVIDIA_DRIVER_CAPABILITIES=(\S+)$", training_dockerfile(), re.M)
    assert capabilities and {"compute", "utility"} <= set(capabilities[1].split(","))


# --- the other images -------------------------------------------------------------------------


def test_mlflow_image_installs_postgres_and_s3_drivers() -> None:
    text = (INFRA / "mlflow.Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+\.\d+-slim", text, flags=re.M)
    assert '"mlflow[auth]==${MLFLOW_VERSION}"' in text  # the basic-auth app's Flask-WTF
    assert re.search(r'"psycopg2-binary==[\d.]+"', text)
    assert re.search(r'"boto3==[\d.]+"', text)
    version = env_example()["MLFLOW_VERSION"]
    assert dockerfile_args(text)["MLFLOW_VERSION"] == version
    assert version.split(".")[0] == "3"
    assert re.findall(r"^USER (\S+)", text, flags=re.M) == ["mlflow"]


def test_face_api_serves_the_champion_from_an_image_without_torch() -> None:
    env = filled_env()
    svc = services()["face-api"]
    assert environment("face-api")["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert resolve(environment("face-api")["FACE_MODEL_URI"], env) == "models:/arcface@champion"
    build = svc["build"]
    text = (INFRA / build["context"] / build["dockerfile"]).read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, flags=re.M)
    assert '"mlflow==${MLFLOW_VERSION}"' in text
    assert dockerfile_args(text)["MLFLOW_VERSION"] == env["MLFLOW_VERSION"]
    installed = set(re.findall(r'"([a-z0-9-]+)==[\d.]+"', text))
    # what the face model's pyfunc needs with the default detector (arcflow.serve.pyfunc)
    from arcflow.serve.pyfunc import DETECTOR_REQUIREMENTS, REQUIREMENTS

    assert {*REQUIREMENTS, *DETECTOR_REQUIREMENTS["retinaface_mnet"]} <= installed
    assert not {name for name in installed if name.startswith("torch")}
    assert (INFRA / "face-api" / "entrypoint.sh").is_file()
    assert "face-api/entrypoint.sh" in text
    assert re.findall(r"^USER (\S+)", text, flags=re.M) == ["faceapi"]


# --- the detectors' own imports ---------------------------------------------------------------


def _module_file(top: Path, module: str) -> Path | None:
    parts = module.split(".")[1:]
    base = top.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def external_imports(entry: str) -> set[str]:
    """Top-level modules outside its package that ``entry`` imports, following the package's
    own modules it reaches (relative and absolute imports), without importing anything."""
    package = entry.split(".")[0]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        pytest.skip(f"{package} is not installed")
    top = Path(spec.origin).parent
    seen: set[str] = set()
    external: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        path = _module_file(top, module)
        if module in seen or path is None:
            continue
        seen.add(module)
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1])
                    stem = f"{base}.{node.module}" if node.module else base
                else:
                    stem = node.module or ""
                targets = [stem, *(f"{stem}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == package:
                    todo.append(target)
                elif target:
                    external.add(target.split(".")[0])
    return external


def test_detectors_group_holds_what_the_detectors_import() -> None:
    """What the detector code ArcFlow runs imports is declared: the project's dependencies
    plus the `detectors` group (pip never reads the detectors' own, --no-deps)."""
    project = pyproject()
    declared = {
        canonicalize_name(Requirement(r).name)
        for r in [*project["dependencies"], *project["optional-dependencies"]["detectors"]]
    }
    owners = importlib.metadata.packages_distributions()
    # arcflow.align.detectors: facenet_pytorch (MTCNN) and retinaface.network (RetinaFace)
    for entry in ("facenet_pytorch", "retinaface.network"):
        for name in sorted(external_imports(entry) - set(sys.stdlib_module_names)):
            dists = {canonicalize_name(d) for d in owners.get(name, [])}
            assert dists & declared, f"{entry} imports {name} ({dists or 'not installed'})"


# --- the setup script -------------------------------------------------------------------------


FAKE_PYTHON = """#!/bin/sh
echo "$0 $*" >> "{log}"
case "$1" in
  -c) echo "3.11.0 (fake)" ;;
  -m) if [ "$2" = venv ]; then mkdir -p "$3/bin" && cp "{fake}" "$3/bin/python"; fi ;;
  -) cat > /dev/null ;;
esac
"""


def run_setup(repo: Path, log: Path) -> list[str]:
    log.write_text("")
    result = subprocess.run(
        ["bash", str(repo / "scripts" / "setup_venv.sh")],
        env={"PATH": os.environ["PATH"], "PYTHON": str(repo / "fake-python"), "HOME": str(repo)},
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines()


def test_setup_script_installs_the_detector_file_and_hashes_it(tmp_path: Path) -> None:
    repo, log = tmp_path / "repo", tmp_path / "calls"
    (repo / "scripts").mkdir(parents=True)
    (repo / "requirements").mkdir()
    for path in (SETUP_SCRIPT, DETECTORS_FILE, ROOT / "pyproject.toml"):
        (repo / path.relative_to(ROOT)).write_bytes(path.read_bytes())
    fake = repo / "fake-python"
    fake.write_text(FAKE_PYTHON.format(log=log, fake=fake))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)

    calls = run_setup(repo, log)
    pip = [c.split(" -m pip ", 1)[1] for c in calls if " -m pip " in c]
    assert any(re.search(r"install -q -e \.\[[^]]*\bdetectors\b[^]]*\]", c) for c in pip), pip
    assert any(re.search(r"install -q -e \.\[[^]]*\bgpu\b", c) for c in pip), pip
    assert "--disable-pip-version-check install -q --no-deps -r requirements/detectors.txt" in pip
    stamps = list((repo / ".venv").glob(".arcflow-deps-*"))
    assert len(stamps) == 1

    assert not any(" -m pip " in c for c in run_setup(repo, log))  # unchanged: nothing to do
    detectors = repo / "requirements" / "detectors.txt"
    detectors.write_text(detectors.read_text() + "# a new pin\n")
    assert any("--no-deps -r requirements/detectors.txt" in c for c in run_setup(repo, log))
    assert list((repo / ".venv").glob(".arcflow-deps-*")) != stamps  # the hash covers the file


# --- the training image's entrypoint: the workspace checkout ---------------------------------


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def image_source(tmp_path: Path) -> Path:
    """The image's copy of the repository (/opt/arcflow): a git repo on branch main."""
    source = tmp_path / "opt-arcflow"
    source.mkdir()
    git(source, "init", "-q", "-b", "main")
    commit(
        source,
        {"params.yaml": "seed: 1\n", "dvc.lock": "v1\n", ".dvc/.gitignore": "/cache\n"},
        "one",
    )
    return source


def start(
    source: Path, workspace: Path, *command: str, update: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The entrypoint as the container starts it, running ``command``."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workspace.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CEILING_DIRECTORIES": str(workspace.parent),
        "ARCFLOW_SOURCE": str(source),
        "ARCFLOW_WORKSPACE": str(workspace),
    }
    if update is not None:
        env["ARCFLOW_WORKSPACE_UPDATE"] = update
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *(command or ("true",))],
        env=env,
        cwd=workspace.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_entrypoint_is_the_images_and_runs_the_command(image_source: Path, tmp_path: Path) -> None:
    text = training_dockerfile()
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, flags=re.M)
    assert entry and entry[1] == '["bash", "/opt/arcflow/infra/trainer/entrypoint.sh"]'
    assert ENTRYPOINT.is_file()  # copied with the repository to /opt/arcflow
    assert re.search(r"^CMD \[\"bash\"\]$", text, flags=re.M)
    # the user reads the root-owned copy and works in the workspace with git
    assert "git config --system --add safe.directory /opt/arcflow" in text
    workspace = tmp_path / "workspace"
    result = start(image_source, workspace, "sh", "-c", 'echo "ran $0 $1"', "a", "b c")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ran a b c\n"


def test_a_new_volume_gets_the_images_commit(image_source: Path, tmp_path: Path) -> None:
    """The volume starts with the DVC cache's mount point (and maybe a cache) inside it."""
    workspace = tmp_path / "workspace"
    (workspace / ".dvc" / "cache").mkdir(parents=True)
    (workspace / ".dvc" / "cache" / "object").write_text("cached")
    result = start(image_source, workspace)
    assert result.returncode == 0, result.stderr
    head = git(image_source, "rev-parse", "HEAD")
    assert git(workspace, "rev-parse", "HEAD") == head
    assert git(workspace, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(workspace, "config", "remote.image.url") == str(image_source)
    assert git(workspace, "status", "--porcelain") == ""  # the cache is ignored, not in the way
    assert (workspace / ".dvc" / "cache" / "object").read_text() == "cached"
    assert f"checked out {head[:12]} (main, the image's commit)" in result.stderr
    # a detached image (built from a tag, say) gives a branch named `image`
    other = tmp_path / "second"
    git(image_source, "checkout", "-q", "--detach")
    assert start(image_source, other).returncode == 0
    assert git(other, "symbolic-ref", "--short", "HEAD") == "image"


def test_a_rebuilt_image_fast_forwards_the_checkout_and_keeps_its_outputs(
    image_source: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    assert start(image_source, workspace).returncode == 0
    (workspace / "models").mkdir()
    (workspace / "models" / "model.pt").write_text("weights")  # an output (DVC, gitignored)
    (workspace / "dvc.lock").write_text("v1 + a local run\n")  # what `dvc repro` leaves
    new = commit(image_source, {"params.yaml": "seed: 2\n"}, "two")
    result = start(image_source, workspace)
    assert result.returncode == 0, result.stderr
    assert git(workspace, "rev-parse", "HEAD") == new
    assert "fast-forwarded" in result.stderr and new[:12] in result.stderr
    assert (workspace / "params.yaml").read_text() == "seed: 2\n"
    assert (workspace / "dvc.lock").read_text() == "v1 + a local run\n"
    assert (workspace / "models" / "model.pt").read_text() == "weights"
    again = start(image_source, workspace)
    assert "the image's commit" in again.stderr and "fast-forwarded" not in again.stderr


def test_a_checkout_git_cannot_fast_forward_stays_and_the_worker_starts(
    image_source: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    assert start(image_source, workspace).returncode == 0
    old = git(workspace, "rev-parse", "HEAD")
    (workspace / "dvc.lock").write_text("a local run\n")
    commit(image_source, {"dvc.lock": "v2\n"}, "the new commit changes dvc.lock too")
    result = start(image_source, workspace, "sh", "-c", "echo started")
    assert result.returncode == 0 and result.stdout == "started\n"
    assert "WARNING" in result.stderr and "pull --ff-only image HEAD" in result.stderr
    assert git(workspace, "rev-parse", "HEAD") == old
    assert (workspace / "dvc.lock").read_text() == "a local run\n"

    # never: only report, even when a fast-forward would work
    (workspace / "dvc.lock").write_text("v1\n")
    result = start(image_source, workspace, update="never")
    assert result.returncode == 0
    assert "ARCFLOW_WORKSPACE_UPDATE=never" in result.stderr
    assert git(workspace, "rev-parse", "HEAD") == old


def test_local_commits_ahead_of_the_image_are_kept(image_source: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    assert start(image_source, workspace).returncode == 0
    mine = commit(workspace, {"params.yaml": "seed: 7\n"}, "a local experiment")
    result = start(image_source, workspace)
    assert result.returncode == 0
    assert "ahead of the image's" in result.stderr
    assert git(workspace, "rev-parse", "HEAD") == mine


def test_a_mounted_checkout_is_used_as_it_is(image_source: Path, tmp_path: Path) -> None:
    """A node's own checkout, bind-mounted at /workspace, is never moved to the image's."""
    workspace = tmp_path / "node-checkout"
    git(tmp_path, "clone", "-q", str(image_source), str(workspace))
    mine = git(workspace, "rev-parse", "HEAD")
    commit(image_source, {"params.yaml": "seed: 3\n"}, "newer")
    result = start(image_source, workspace)
    assert result.returncode == 0
    assert "as it is" in result.stderr
    assert git(workspace, "rev-parse", "HEAD") == mine


def test_entrypoint_refuses_what_it_cannot_do(image_source: Path, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    bad = start(image_source, tmp_path / "a", "touch", str(ran), update="always")
    assert bad.returncode == 64 and "ff-only or never" in bad.stderr
    not_a_repo = tmp_path / "export"
    not_a_repo.mkdir()
    missing = start(not_a_repo, tmp_path / "b", "touch", str(ran))
    assert missing.returncode == 1
    assert "no git repository" in missing.stderr
    assert not ran.exists()
    assert not (tmp_path / "b" / ".git").exists()
