"""The run's schedule as training builds it: every preset's lr factor at its key steps, the
MS1MV2 preset exactly as the paper (180K iterations of 512 images, lr/10 at 100K and 160K on
any device count), and the validation of the schedule and batch keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from arcflow.config import Params, TrainParams, load_params
from arcflow.errors import ConfigError
from arcflow.presets import list_presets, preset_params
from arcflow.train.distributed import resolve_devices
from arcflow.train.sampling import StepPlan
from arcflow.train.schedules import (
    BatchLayout,
    StepSchedule,
    batch_layout,
    lr_factor,
    run_schedule,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PARAMS, CONFIGS = ROOT / "params.yaml", ROOT / "configs"
PRESETS = ["params.yaml", *list_presets(CONFIGS)]  # the default, then each preset merged onto it
#: Training images of the real datasets the presets align (insightface's releases).
RELEASE_IMAGES = {"faces_emore": 5_822_653, "faces_webface": 490_623}
MS1MV2 = "ms1mv2_r100_arcface"


def _load(name: str) -> Params:
    """params.yaml, or a preset merged onto it: what the preset's experiment runs with."""
    return load_params(PARAMS) if name == "params.yaml" else preset_params(name, PARAMS, CONFIGS)


def _training_images(params: Params) -> int:
    assert params.align is not None and params.data is not None
    source = params.data.sources[params.align.source]
    if source.synthetic:
        assert source.options is not None
        return source.options.train_identities * source.options.train_images_per_identity
    return RELEASE_IMAGES[params.align.source]


def _schedule(cfg: TrainParams, images: int, world_size: int) -> tuple[StepPlan, StepSchedule]:
    """What train_model builds: the batch layout, the step plan, the step schedule."""
    layout = batch_layout(cfg, world_size)
    plan = StepPlan(images, layout.micro_batch, layout.accumulation, world_size, cfg.seed)
    return plan, run_schedule(cfg, plan.steps_per_epoch)


def _world_sizes(cfg: TrainParams) -> list[int]:
    """The device counts a preset may run on: its own fixed count, else 1, 4 and 8 GPUs."""
    if cfg.devices == "auto":
        return [1, 4, 8]
    return [resolve_devices(cfg.devices, "cpu")]


def _cases() -> list:
    cases = []
    for name in PRESETS:
        params = _load(name)
        assert params.train is not None
        shipped = params.train
        variants = {shipped.schedule: shipped}
        for kind in ("poly", "cosine"):  # every kind on every preset's length and warmup
            if kind not in variants:
                variants[kind] = TrainParams.model_validate(
                    {**shipped.model_dump(), "schedule": kind}
                )
        for kind, cfg in variants.items():
            for world in _world_sizes(cfg):
                label = f"{name}-{kind}{'' if cfg is shipped else '(variant)'}-x{world}"
                cases.append(pytest.param(cfg, _training_images(params), world, id=label))
    return cases


@pytest.mark.parametrize(("cfg", "images", "world"), _cases())
def test_every_preset_schedule_at_its_key_steps(cfg: TrainParams, images: int, world: int) -> None:
    plan, schedule = _schedule(cfg, images, world)
    total, warmup, milestones = schedule.total_steps, schedule.warmup_steps, schedule.milestones
    factor = schedule.factor()
    if cfg.total_steps is not None:  # given in steps: taken exactly
        assert (total, warmup) == (cfg.total_steps, cfg.warmup_steps)
        assert milestones == tuple(cfg.milestone_steps)
    else:  # given in epochs: converted at this dataset's steps per epoch
        spe = plan.steps_per_epoch
        assert total == cfg.epochs * spe
        assert warmup == round(cfg.warmup_epochs * spe)
        assert milestones == tuple(round(e * spe) for e in cfg.step_milestones)

    # warmup: linear from 1/warmup to 1 at its last step
    if warmup:
        assert factor(0) == pytest.approx(1 / warmup)
        assert factor(warmup // 2) == pytest.approx((warmup // 2 + 1) / warmup)
        assert factor(warmup - 1) == pytest.approx(1.0)
    assert factor(warmup) == pytest.approx(1.0)  # the schedule proper starts at the base lr

    last = total - 1
    if schedule.kind == "step":
        assert milestones, "a step schedule without milestones"
        for i, m in enumerate(milestones):
            assert factor(m - 1) == pytest.approx(0.1**i), f"just before milestone {m}"
            assert factor(m) == pytest.approx(0.1 ** (i + 1)), f"from milestone {m}"
        assert factor(last) == pytest.approx(0.1 ** len(milestones))
    elif schedule.kind == "poly":
        middle = warmup + (total - warmup) // 2
        assert factor(middle) == pytest.approx(1 - (middle - warmup) / (total - warmup))
        assert factor(last) == pytest.approx(1 / (total - warmup))
    else:
        middle = warmup + (total - warmup) // 2
        progress = (middle - warmup) / (total - warmup)
        assert factor(middle) == pytest.approx(0.5 * (1 + math.cos(math.pi * progress)))
        progress = (last - warmup) / (total - warmup)
        assert factor(last) == pytest.approx(0.5 * (1 + math.cos(math.pi * progress)))
    # after warmup the lr never rises, and stays positive to the last step
    after = [factor(s) for s in range(warmup, total)]
    assert after == sorted(after, reverse=True)
    assert after[-1] > 0.0


@pytest.mark.parametrize(
    ("world", "micro", "accumulation"), [(1, 128, 4), (2, 128, 2), (4, 128, 1), (8, 64, 1)]
)
def test_ms1mv2_preset_is_the_papers_schedule_on_any_device_count(
    world: int, micro: int, accumulation: int
) -> None:
    """Acceptance: 180,000 iterations of 512 images, lr 0.1 / 10 at exactly 100,000 and
    160,000, whatever the device count; nothing rescales lr."""
    params = _load(MS1MV2)
    cfg = params.train
    assert cfg is not None
    assert (cfg.lr, cfg.momentum, cfg.weight_decay) == (0.1, 0.9, 5e-4)
    assert cfg.dropout == 0.4  # the paper's BN-Dropout-FC-BN output layer
    plan, schedule = _schedule(cfg, RELEASE_IMAGES["faces_emore"], world)
    assert (plan.micro_batch, plan.accumulation) == (micro, accumulation)
    assert plan.micro_batch * plan.world_size * plan.accumulation == plan.global_batch == 512
    assert schedule.total_steps == 180_000
    assert schedule.milestones == (100_000, 160_000)
    assert schedule.warmup_steps == 0
    lr = [cfg.lr * schedule.factor()(s) for s in (0, 99_999, 100_000, 159_999, 160_000, 179_999)]
    assert lr == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_lambda_lr_uses_the_factor_of_the_update_it_precedes() -> None:
    """Under torch's LambdaLR (as the loop steps it), milestone m means: updates 1…m at the
    lr, update m + 1 on at a tenth; the same factor for update n on every count."""
    schedule = StepSchedule("step", total_steps=18, milestones=(10, 16))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor())
    used = []
    for _ in range(schedule.total_steps):
        used.append(optimizer.param_groups[0]["lr"])  # the lr of this update
        optimizer.step()
        scheduler.step()
    assert used == pytest.approx([0.1] * 10 + [0.01] * 6 + [0.001] * 2)


@pytest.mark.parametrize("kind", ["poly", "cosine", "step"])
def test_lr_factor_with_warmup(kind: str) -> None:
    factor = lr_factor(kind, total_steps=20, warmup_steps=4, milestones=(10, 15))
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(4) == pytest.approx(1.0)
    expected = {
        "poly": [1 - (s - 4) / 16 for s in (9, 10, 19)],
        "cosine": [0.5 * (1 + math.cos(math.pi * (s - 4) / 16)) for s in (9, 10, 19)],
        "step": [1.0, 0.1, 0.01],
    }[kind]
    assert [factor(s) for s in (9, 10, 19)] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"kind": "step", "total_steps": 0}, "positive"),
        ({"kind": "linear", "total_steps": 10}, "unknown schedule"),
        ({"kind": "step", "total_steps": 10, "warmup_steps": 11}, "does not fit"),
        ({"kind": "step", "total_steps": 10, "milestones": (6, 3)}, "increasing"),
        ({"kind": "step", "total_steps": 10, "milestones": (5, 5)}, "increasing"),
        ({"kind": "step", "total_steps": 10, "milestones": (0, 5)}, "inside the run"),
        ({"kind": "step", "total_steps": 10, "milestones": (5, 10)}, "inside the run"),
    ],
)
def test_lr_factor_refuses_steps_outside_the_run(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        lr_factor(**kwargs)


# -- the batch of one step --------------------------------------------------------------


def _train(**overrides: object) -> TrainParams:
    return TrainParams.model_validate(overrides)


@pytest.mark.parametrize(
    ("overrides", "world", "expected"),
    [
        ({"global_batch_size": 512}, 1, (512, 1)),  # no max_device_batch: all at once
        ({"global_batch_size": 512, "max_device_batch": 128}, 1, (128, 4)),
        ({"global_batch_size": 512, "max_device_batch": 100}, 1, (64, 8)),  # fewest that divide
        ({"global_batch_size": 512, "max_device_batch": 128}, 16, (32, 1)),
        ({"global_batch_size": 24, "max_device_batch": 10, "images_per_identity": 3}, 1, (6, 4)),
        ({"batch_size": 32, "grad_accumulation": 2}, 4, (32, 2)),  # per device: grows with it
    ],
)
def test_batch_layout(overrides: dict, world: int, expected: tuple[int, int]) -> None:
    layout = batch_layout(_train(**overrides), world)
    assert (layout.micro_batch, layout.accumulation) == expected
    if "global_batch_size" in overrides:
        assert layout.global_batch == overrides["global_batch_size"]
    assert layout == BatchLayout(*expected, world)


def test_global_batch_must_split_evenly_over_the_devices() -> None:
    cfg = _train(global_batch_size=512, max_device_batch=128)
    with pytest.raises(ConfigError, match=r"train\.global_batch_size 512 .* 3 processes") as err:
        batch_layout(cfg, 3)
    assert "lr" in err.value.hint  # lr is not rescaled behind the user's back


def test_global_batch_with_identities_that_no_micro_batch_fits() -> None:
    assert batch_layout(_train(global_batch_size=24, images_per_identity=4), 6).micro_batch == 4
    cfg = _train(global_batch_size=24, images_per_identity=4)
    with pytest.raises(ConfigError, match=r"3 images each, .*images_per_identity 4"):
        batch_layout(cfg, 8)
    cfg = _train(global_batch_size=24, max_device_batch=8, images_per_identity=4)
    with pytest.raises(ConfigError, match=r"at most 8 \(train\.max_device_batch\)"):
        batch_layout(cfg, 8)


def test_epoch_milestones_that_collapse_into_one_step_are_an_error() -> None:
    cfg = _train(epochs=4, schedule="step", step_milestones=[1.1, 1.2])
    assert run_schedule(cfg, steps_per_epoch=100).milestones == (110, 120)
    with pytest.raises(ConfigError, match=r"step_milestones at 2 steps per epoch.*increasing"):
        run_schedule(cfg, steps_per_epoch=2)


# -- validation of the keys ---------------------------------------------------------------


def test_steps_and_global_batch_need_no_per_device_keys() -> None:
    cfg = _train(total_steps=100, global_batch_size=64, schedule="step", milestone_steps=[50])
    assert (cfg.epochs, cfg.batch_size, cfg.grad_accumulation) == (None, None, None)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"epochs": 10, "total_steps": 100}, "epochs and total_steps are both set"),
        ({"epochs": None}, "set epochs or total_steps"),
        ({"total_steps": 100, "warmup_epochs": 1.0}, "warmup_epochs is set .* warmup_steps"),
        (
            {"total_steps": 100, "schedule": "step", "step_milestones": [50]},
            "step_milestones is set .* milestone_steps",
        ),
        ({"epochs": 10, "warmup_steps": 5}, "warmup_steps is set .* warmup_epochs"),
        ({"epochs": 10, "milestone_steps": [5]}, "milestone_steps is set .* step_milestones"),
        ({"total_steps": 100, "schedule": "step"}, "schedule 'step' needs milestone_steps"),
        ({"epochs": 10, "schedule": "step"}, "schedule 'step' needs step_milestones"),
        (
            {"total_steps": 100, "schedule": "step", "milestone_steps": [60, 40]},
            r"milestone_steps must be increasing, got \[60, 40\]",
        ),
        (
            {"total_steps": 100, "schedule": "step", "milestone_steps": [50, 100]},
            "milestone_steps must lie inside the run .*total_steps 100",
        ),
        (
            {"epochs": 10, "schedule": "step", "step_milestones": [0.0, 5.0]},
            "step_milestones must lie inside the run",
        ),
        ({"total_steps": 100, "warmup_steps": 100}, "warmup_steps 100 must be shorter"),
        ({"epochs": 2, "warmup_epochs": 2.0}, "warmup_epochs 2.0 must be shorter"),
        (
            {"total_steps": 100, "schedule": "step", "milestone_steps": [10], "warmup_steps": 20},
            "warmup_steps 20 must end by the first of milestone_steps",
        ),
        ({"global_batch_size": 512, "batch_size": 128}, "batch_size set with global_batch_size"),
        (
            {"global_batch_size": 512, "grad_accumulation": 2},
            "grad_accumulation set with global_batch_size",
        ),
        ({"batch_size": None}, "batch_size null: set it, or set global_batch_size"),
        ({"max_device_batch": 128}, "max_device_batch applies with global_batch_size only"),
        (
            {"global_batch_size": 510, "images_per_identity": 4},
            "global_batch_size 510 must be a multiple of images_per_identity 4",
        ),
    ],
)
def test_schedule_and_batch_keys_are_validated(
    tmp_path: Path, overrides: dict, fragment: str
) -> None:
    """Through a params file, as a stage reads it: one line naming the keys."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": overrides}))
    with pytest.raises(ConfigError, match=fragment) as err:
        load_params(path, ("train",))
    assert "\n" not in str(err.value)
