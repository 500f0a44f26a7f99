"""Typed view of params.yaml: one pydantic model per section, validated at stage start.

``load_params(path, sections)`` returns a :class:`Params` with the requested sections
validated; a wrong key, type or value raises :class:`~arcflow.errors.ConfigError` with
one line naming the key and what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    model_validator,
)

from arcflow.errors import ConfigError
from arcflow.params_base import PositiveInt, Probability, Section
from arcflow.train_params import TrainParams  # the train section, here with the others


class EvalDifficulty(Section):
    """Nuisance strength (0..1) of each SynthFace evaluation set, chosen so that the default
    model is clearly below 100% on every headline (BENCHMARKS.md "SynthFace difficulty")."""

    lfw: Probability = 0.65
    cfp_fp: Probability = 0.5
    agedb_30: Probability = 1.0
    ijb: Probability = 0.6
    megaface: Probability = 0.5
    ytf: Probability = 1.0


class SynthFaceParams(Section):
    """The embedded, procedurally generated default dataset."""

    seed: int = 0
    train_identities: PositiveInt = 300
    train_images_per_identity: PositiveInt = 16
    val_identities: PositiveInt = 100
    val_images_per_identity: Annotated[int, Field(ge=2)] = 8
    val_pairs_per_fold: PositiveInt = 30
    val_folds: Annotated[int, Field(ge=2)] = 10
    frame_size: Annotated[int, Field(ge=96, le=1024)] = 144
    difficulty: Probability = 0.5
    jpeg_quality: Annotated[int, Field(ge=50, le=100)] = 95
    eval_sets: list[Literal["lfw", "cfp_fp", "agedb_30", "ijb", "megaface", "ytf"]] = Field(
        default_factory=lambda: ["lfw", "cfp_fp", "agedb_30", "ijb", "megaface", "ytf"]
    )
    megaface_distractors: Annotated[int, Field(ge=10)] = 1000
    eval_difficulty: EvalDifficulty = Field(default_factory=lambda: EvalDifficulty())


SOURCE_SCHEMES = ("https://", "http://", "s3://", "file://", "synthetic://")


def _check_scheme(uri: str) -> None:
    if "://" in uri and not uri.startswith(SOURCE_SCHEMES):
        raise ValueError(f"uri scheme must be one of {', '.join(SOURCE_SCHEMES)} or a path")


class SourceParams(Section):
    """One dataset to fetch (lands in data/raw/<name>/): its URI, checksum and unpacking.

    Credentials never go here: S3 uses the environment / AWS config chain.
    """

    uri: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    md5: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = None
    extract: bool | None = None
    options: SynthFaceParams | None = None
    revision: str | None = None  # written by the retrain flow: the contents it last trained on

    @model_validator(mode="after")
    def _check_uri(self) -> SourceParams:
        synthetic = self.uri.startswith("synthetic://")
        _check_scheme(self.uri)
        if synthetic and self.uri != "synthetic://synthface":
            raise ValueError("the only synthetic source is synthetic://synthface")
        if synthetic and (self.sha256 or self.md5 or self.extract):
            raise ValueError("synthetic sources take no checksum or extract")
        if not synthetic and self.options is not None:
            raise ValueError("options are for synthetic:// sources only")
        return self

    @property
    def synthetic(self) -> bool:
        return self.uri.startswith("synthetic://")


class S3Params(Section):
    """S3 or S3-compatible endpoint settings (credentials come from the environment)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None


class ExtractLimitsParams(Section):
    """What unpacking one downloaded archive may cost (zip and tar bombs are refused)."""

    max_bytes: Annotated[int, Field(ge=1)] = 1 << 40
    max_ratio: Annotated[float, Field(gt=0.0)] = 200.0
    max_members: Annotated[int, Field(ge=1)] = 2_000_000


class RetryParams(Section):
    """Transient-failure handling of downloads."""

    attempts: Annotated[int, Field(ge=1, le=50)] = 5
    backoff_s: Annotated[float, Field(ge=0.0)] = 0.5
    timeout_s: Annotated[float, Field(gt=0.0)] = 30.0


#: Every name that becomes part of a path (sources, imports, align.source): no separators, no
#: leading dot, bounded length.
SourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class DataParams(Section):
    """The datasets the download stage fetches (one DVC stage per source)."""

    sources: dict[SourceName, SourceParams] = Field(
        default_factory=lambda: {
            "synthface": SourceParams(uri="synthetic://synthface", options=SynthFaceParams())
        }
    )
    s3: S3Params = S3Params()
    retry: RetryParams = RetryParams()
    extract_limits: ExtractLimitsParams = ExtractLimitsParams()


class ImportParams(Section):
    """One model trained elsewhere (``arcflow import-model``): stage import@<name> fetches it
    into models/imported/<name>; it is evaluated, exported and registered beside ours."""

    uri: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    license: str | None = None
    arch: str | None = None  # default: inferred from the weights (PyTorch)
    colour: Literal["rgb", "bgr"] | None = None  # ONNX: the channel order it expects (rgb)

    @model_validator(mode="after")
    def _check_uri(self) -> ImportParams:
        _check_scheme(self.uri)
        if self.uri.startswith("synthetic://"):
            raise ValueError("a model cannot come from a synthetic:// source")
        return self


class ImportsParams(RootModel[dict[SourceName, ImportParams]]):
    """``imports``: name -> the model to import (empty: only the pipeline's own model)."""


class AlignParams(Section):
    """Face alignment to the 112x112 ArcFace template."""

    source: SourceName = "synthface"
    detector: Literal["annotations", "mtcnn", "retinaface", "retinaface_mnet"] = "retinaface_mnet"
    retinaface_weights: str | None = None
    retinaface_size: Annotated[int, Field(ge=32)] = 640
    min_score: Probability = 0.9
    centre_weight: Probability = 0.5
    detect_batch: PositiveInt = 16
    image_size: Literal[112] = 112
    jpeg_quality: Annotated[int, Field(ge=50, le=100)] = 95
    max_bad_fraction: Probability = 0.01
    workers: PositiveInt = 1
    shard_size: PositiveInt = 1000

    @model_validator(mode="after")
    def _retinaface_needs_weights(self) -> AlignParams:
        if self.detector == "retinaface" and not self.retinaface_weights:
            raise ValueError(
                "detector 'retinaface' needs retinaface_weights (a file fetched by a source, "
                "e.g. data/raw/retinaface/Resnet50_Final.pth)"
            )
        return self


BENCHMARK_NAMES = (
    "lfw",
    "cfp_fp",
    "cfp_ff",
    "agedb_30",
    "calfw",
    "cplfw",
    "vgg2_fp",
    "ytf",
    "megaface",
    "ijbb",
    "ijbc",
    "trillion_pairs",
    "iqiyi_vid",
)


class EvaluateParams(Section):
    """Every benchmark of the paper on the aligned evaluation sets."""

    benchmarks: list[Literal[("all", *BENCHMARK_NAMES)]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["all"], min_length=1
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: Literal["auto"] | PositiveInt = 1
    batch_size: PositiveInt = 128
    flip: bool = True
    cache_dir: str | None = ".cache/features"
    n_folds: Annotated[int, Field(ge=2)] = 10
    far_target: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-3
    ijb_fars: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1], min_length=1
    )
    ijb_rank_pooling: Literal["pooled", "averaged"] = "pooled"
    megaface_refined: bool = True
    chunk: PositiveInt = 4096

    @model_validator(mode="after")
    def _all_alone(self) -> EvaluateParams:
        if "all" in self.benchmarks and len(self.benchmarks) > 1:
            raise ValueError("benchmarks: 'all' cannot be combined with names")
        return self


class ExportParams(Section):
    """ONNX export and its parity check against PyTorch."""

    opset: Annotated[int, Field(ge=17, le=21)] = 17
    atol: Annotated[float, Field(gt=0.0)] = 1e-4
    min_cosine: Annotated[float, Field(gt=0.0, le=1.0)] = 0.99999
    fp16_min_cosine: Annotated[float, Field(gt=0.0, le=1.0)] = 0.999
    parity_batch: PositiveInt = 8
    parity_real: Annotated[int, Field(ge=0)] = 32
    latency_runs: PositiveInt = 20
    throughput_batch: PositiveInt = 64


class ServeParams(Section):
    """The face service packed with every exported model (``arcflow.serve``)."""

    detector: Literal["retinaface_mnet", "mtcnn", "retinaface"] = "retinaface_mnet"
    min_score: Probability = 0.9
    centre_weight: Probability = 0.5
    default_far: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-4
    max_image_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 20 << 20
    max_pixels: Annotated[int, Field(ge=12_544, le=1 << 30)] = 40_000_000
    max_images: Annotated[int, Field(ge=1, le=4096)] = 256


class RegistryParams(Section):
    """Champion/challenger promotion in the MLflow model registry (``arcflow promote``)."""

    model_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = "arcface"
    primary_metric: str = "eval.ijbc.tar_far_1e-4"
    min_improvement: Annotated[float, Field(ge=0.0)] = 0.001
    max_regression: Annotated[float, Field(ge=0.0)] = 0.005
    regression_metrics: list[str] | None = None
    min_metrics: dict[str, float] = Field(default_factory=dict)
    max_latency_ms: Annotated[float, Field(gt=0.0)] | None = None
    lock_timeout_s: Annotated[float, Field(gt=0.0)] = 300.0
    lock_ttl_s: Annotated[float, Field(gt=0.0)] = 900.0

    @model_validator(mode="after")
    def _ttl_outlasts_the_wait(self) -> RegistryParams:
        if self.lock_ttl_s <= self.lock_timeout_s:
            raise ValueError(
                "lock_ttl_s must exceed lock_timeout_s (and the longest promotion): a lock "
                "younger than that is a live holder's"
            )
        return self


class FlowsParams(Section):
    """Prefect: the scheduled retraining, how the pipeline flow retries its stages, and how
    long a flow waits for another one working in the same checkout."""

    retrain_cron: str = "0 3 * * 1"
    timezone: str = "UTC"
    watch: str | None = None
    stage_retries: Annotated[int, Field(ge=0, le=10)] = 2
    retry_delay_s: Annotated[float, Field(ge=0.0)] = 30.0
    trigger_event: str | None = None
    workspace_lock_timeout_s: Annotated[float, Field(ge=0.0)] = 600.0


class TrackingParams(Section):
    """MLflow: the experiment new runs go to; the URI comes from MLFLOW_TRACKING_URI or the
    local default (a relative SQLite path is the DVC repository's: arcflow.tracking.run)."""

    experiment: str = "arcflow"
    default_uri: str = "sqlite:///mlflow.db"


SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataParams,
    "imports": ImportsParams,
    "align": AlignParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "export": ExportParams,
    "serve": ServeParams,
    "registry": RegistryParams,
    "flows": FlowsParams,
    "tracking": TrackingParams,
}


class Params(BaseModel):
    """The validated sections a stage asked for (others stay None)."""

    model_config = ConfigDict(frozen=True)

    data: DataParams | None = None
    imports: ImportsParams | None = None
    align: AlignParams | None = None
    train: TrainParams | None = None
    evaluate: EvaluateParams | None = None
    export: ExportParams | None = None
    serve: ServeParams | None = None
    registry: RegistryParams | None = None
    flows: FlowsParams | None = None
    tracking: TrackingParams | None = None


def _describe(error: dict[str, Any], section: str) -> str:
    """One line for one pydantic error: dotted key, what went wrong, what was given."""
    key = ".".join([section, *(str(p) for p in error["loc"])])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    given = error.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"{key}: {error['msg']}{shown}"


def validate_section(name: str, raw: Any, *, source: str = "params.yaml") -> BaseModel:
    """Validate one section's raw mapping, raising ConfigError naming the key."""
    model = SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section '{name}' must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if errors[0]["type"] == "extra_forbidden":
            allowed = ", ".join(model.model_fields) if not errors[0]["loc"][:-1] else ""
            suffix = f"; allowed keys: {allowed}" if allowed else ""
            raise ConfigError(f"{source}: {_describe(errors[0], name)}{suffix}") from None
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(errors[0], name)}{more}") from None


class _ParamsLoader(yaml.SafeLoader):
    """YAML as DVC reads params.yaml: ``1e-4`` is a float (YAML 1.2), not the string PyYAML's
    YAML 1.1 makes of it, so strict validation sees the number the user wrote."""


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Read a params file as a mapping, with a clear error if it is missing or not YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found", hint="run from the repository root")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); not a params file") from None
    try:
        raw = yaml.load(text, Loader=_ParamsLoader) or {}  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return raw


def load_params(path: str | Path = "params.yaml", sections: tuple[str, ...] = ()) -> Params:
    """Load ``path`` and validate ``sections`` (all known sections if empty).

    Unknown top-level sections are always an error (a typo would otherwise be ignored).
    A requested section that is absent is an error too (a params file is always complete).
    """
    raw = read_params_file(path)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section '{unknown[0]}'; allowed sections: {', '.join(SECTIONS)}"
        )
    wanted = sections or tuple(SECTIONS)
    values: dict[str, BaseModel] = {}
    for name in wanted:
        if name not in SECTIONS:
            raise ValueError(f"unknown params section requested: {name}")
        if name not in raw:
            raise ConfigError(f"{path}: missing section '{name}'")
        values[name] = validate_section(name, raw[name], source=str(path))
    return Params(**values)
