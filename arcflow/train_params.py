"""The ``train`` section of params.yaml: backbone, margin head, schedule and optimisation,
with the validators that refuse settings which would train something other than asked."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from arcflow.params_base import PositiveInt, Probability, Section


class SphereFaceAnneal(Section):
    """SphereFace's blend with softmax: λ = max(minimum, base·(1 + gamma·step)^(−power))."""

    base: Annotated[float, Field(ge=0.0)] = 1000.0
    gamma: Annotated[float, Field(ge=0.0)] = 0.12
    power: Annotated[float, Field(ge=0.0)] = 1.0
    minimum: Annotated[float, Field(ge=0.0)] = 5.0


class AugmentParams(Section):
    """Probabilities of the training augmentations (0 = off)."""

    hflip: Probability = 0.5
    downscale: Probability = 0.0
    blur: Probability = 0.0
    color: Probability = 0.0
    grayscale: Probability = 0.0


class TrainParams(Section):
    """Backbone, margin head and optimisation."""

    backbone: Literal[
        "iresnet18",
        "iresnet34",
        "iresnet50",
        "iresnet100",
        "iresnet200",
        "mobilefacenet",
        "mobilefacenet_large",
    ] = "iresnet18"
    width: Annotated[float, Field(gt=0.0, le=2.0)] = 1.0
    embedding_size: PositiveInt = 512
    dropout: Probability = 0.0
    head: Literal[
        "softmax", "norm_softmax", "sphereface", "cosface", "arcface", "combined", "none"
    ] = "arcface"
    s: Annotated[float, Field(gt=0.0)] = 64.0
    # Margins; null = the paper's value for the head (arcflow.heads.margins.head_margins).
    m: Annotated[float, Field(ge=0.0, lt=3.14159)] | None = None  # arcface m2 0.5, cosface m3 0.35
    m1: Annotated[float, Field(gt=0.0)] | None = None  # sphereface 1.35, combined (CM1) 1
    m2: Annotated[float, Field(ge=0.0, lt=3.14159)] | None = None  # combined (CM1) 0.3
    m3: Annotated[float, Field(ge=0.0)] | None = None  # combined (CM1) 0.2
    sphereface_psi: Literal["extension", "original"] = "extension"  # sphereface's target past θ*
    # The run's length, warmup and lr drops in one unit: epochs (epochs, warmup_epochs,
    # step_milestones) or optimiser steps (total_steps, warmup_steps, milestone_steps).
    epochs: PositiveInt | None = 20  # null when total_steps is given (its default then)
    total_steps: PositiveInt | None = None
    # The images of one step: global_batch_size (fixed, whatever the device count; batch_size
    # and grad_accumulation derived, so null) or batch_size x grad_accumulation per process.
    global_batch_size: PositiveInt | None = None
    max_device_batch: PositiveInt | None = None  # with global_batch_size: most per micro-batch
    batch_size: PositiveInt | None = 128
    lr: Annotated[float, Field(gt=0.0)] = 0.1
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    weight_decay: Annotated[float, Field(ge=0.0)] = 5e-4
    warmup_epochs: Annotated[float, Field(ge=0.0)] = 0.0
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    schedule: Literal["poly", "cosine", "step"] = "poly"
    step_milestones: list[float] = Field(default_factory=list)  # epochs
    milestone_steps: list[PositiveInt] = Field(default_factory=list)
    grad_clip: Annotated[float, Field(ge=0.0)] = 5.0
    seed: int = 2048
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: Annotated[int, Field(ge=0)] = 2
    preload_mb: Annotated[int, Field(ge=0)] = 2048  # MiB: the decoded set kept in memory
    straight_through: bool = False
    devices: Literal["auto"] | PositiveInt = 1
    grad_accumulation: PositiveInt | None = 1
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    no_decay_bn_bias: bool = False
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    checkpoint_every: Annotated[int, Field(ge=0)] = 0
    val_every: Annotated[int, Field(ge=0)] = 0
    val_flip: bool = True  # the flip test in the verifications while training (as evaluate)
    extra_losses: list[Literal["intra", "inter", "triplet"]] = Field(default_factory=list)
    triplet_margin: Annotated[float, Field(ge=0.0)] = 0.35
    images_per_identity: Annotated[int, Field(ge=0)] = 0
    partial_fc: bool = False
    sample_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    sphereface_lambda: SphereFaceAnneal = Field(default_factory=lambda: SphereFaceAnneal())
    augment: AugmentParams = Field(default_factory=lambda: AugmentParams())

    @model_validator(mode="before")
    @classmethod
    def _derived_keys_default_to_null(cls, data: Any) -> Any:
        """A run given in steps has no default epochs; a global batch no per-device one."""
        if isinstance(data, dict):
            data = dict(data)
            if data.get("total_steps") is not None:
                data.setdefault("epochs", None)
            if data.get("global_batch_size") is not None:
                data.setdefault("batch_size", None)
                data.setdefault("grad_accumulation", None)
        return data

    @model_validator(mode="after")
    def _schedule_in_one_unit(self) -> TrainParams:
        if self.epochs is not None and self.total_steps is not None:
            raise ValueError(
                "epochs and total_steps are both set: give the run's length in one unit "
                "(the other null)"
            )
        if self.total_steps is not None:
            unit, run, length = "steps", "total_steps", self.total_steps
            warmup_key, milestones_key = "warmup_steps", "milestone_steps"
            foreign = {"warmup_epochs": warmup_key, "step_milestones": milestones_key}
        elif self.epochs is not None:
            unit, run, length = "epochs", "epochs", self.epochs
            warmup_key, milestones_key = "warmup_epochs", "step_milestones"
            foreign = {"warmup_steps": warmup_key, "milestone_steps": milestones_key}
        else:
            raise ValueError("set epochs or total_steps (the run's length)")
        for wrong, right in foreign.items():
            if getattr(self, wrong):
                raise ValueError(
                    f"{wrong} is set but the run's length is in {unit} ({run}): give it as "
                    f"{right} and set {wrong} to {'[]' if 'milestone' in wrong else 0}"
                )
        warmup: float = getattr(self, warmup_key)
        milestones: list[float] = list(getattr(self, milestones_key))
        if self.schedule == "step" and not milestones:
            raise ValueError(f"schedule 'step' needs {milestones_key} ({unit} at which lr /= 10)")
        if milestones != sorted(set(milestones)):  # strictly increasing
            raise ValueError(f"{milestones_key} must be increasing, got {milestones}")
        if milestones and not 0 < milestones[0] <= milestones[-1] < length:
            raise ValueError(
                f"{milestones_key} must lie inside the run (between 0 and {run} {length}), "
                f"got {milestones}"
            )
        if warmup >= length:
            raise ValueError(f"{warmup_key} {warmup} must be shorter than the run ({run} {length})")
        if self.schedule == "step" and warmup > milestones[0]:
            raise ValueError(
                f"{warmup_key} {warmup} must end by the first of {milestones_key} {milestones}"
            )
        return self

    @model_validator(mode="after")
    def _one_way_to_size_the_batch(self) -> TrainParams:
        per_device = ("batch_size", "grad_accumulation")
        if self.global_batch_size is None:
            missing = [k for k in per_device if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} null: set it, or set global_batch_size (images "
                    "per step, from which the per-device batch is derived)"
                )
            if self.max_device_batch is not None:
                raise ValueError(
                    "max_device_batch applies with global_batch_size only (set it to null, "
                    "or size the batch with global_batch_size)"
                )
            return self
        derived = [k for k in per_device if getattr(self, k) is not None]
        if derived:
            raise ValueError(
                f"{' and '.join(derived)} set with global_batch_size {self.global_batch_size}: "
                "they are derived from it for each device count (set them to null, or "
                "global_batch_size to null to size the batch per device)"
            )
        group = self.images_per_identity
        if group and self.global_batch_size % group:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} must be a multiple of "
                f"images_per_identity {group}"
            )
        if group and self.max_device_batch is not None and self.max_device_batch < group:
            raise ValueError(
                f"max_device_batch {self.max_device_batch} must hold at least "
                f"images_per_identity {group} images"
            )
        return self

    @model_validator(mode="after")
    def _margin_heads_have_a_margin(self) -> TrainParams:
        """Margins left null take the head's paper value; margins that leave a margin head
        without one, or with a target not monotonic in θ, are refused naming the keys."""
        if self.head in ("softmax", "none"):
            return self
        from arcflow.heads.margins import head_margins  # imports torch: only for margin heads

        head_margins(
            self.head,
            m=self.m,
            m1=self.m1,
            m2=self.m2,
            m3=self.m3,
            sphereface_psi=self.sphereface_psi,
        )
        if self.head == "sphereface" and self.partial_fc:
            raise ValueError(
                "head sphereface cannot use partial_fc: Partial FC has neither SphereFace's "
                "lambda annealing (sphereface_lambda) nor sphereface_psi; set partial_fc: false"
            )
        return self

    @model_validator(mode="after")
    def _losses_fit_the_head(self) -> TrainParams:
        centred = self.head not in ("softmax", "none")
        if {"intra", "inter"} & set(self.extra_losses) and not (centred and not self.partial_fc):
            raise ValueError(
                "extra_losses intra/inter need a margin head's class centres (head norm_softmax, "
                "arcface, cosface, sphereface or combined, without partial_fc)"
            )
        if self.head == "none" and "triplet" not in self.extra_losses:
            raise ValueError("head 'none' trains on the extra losses only: add triplet")
        if "triplet" in self.extra_losses and self.images_per_identity < 2:
            raise ValueError(
                "extra_losses triplet needs images_per_identity >= 2 (batches of identities "
                "x images, so that every anchor has positives)"
            )
        if self.images_per_identity and (self.batch_size or 0) % self.images_per_identity:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of images_per_identity "
                f"{self.images_per_identity}"
            )
        if self.partial_fc and not centred:
            raise ValueError("partial_fc needs a margin head (not softmax or none)")
        return self
