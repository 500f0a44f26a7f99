"""Presets as small diffs over params.yaml: merging (values, comments, !replace, typos),
the ``dvc exp run -S`` arguments (DVC's own code applies them to the same result) and the
``arcflow preset`` commands that need no DVC repository."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from arcflow.cli import app
from arcflow.config import load_params
from arcflow.errors import ConfigError
from arcflow.presets import (
    APPLIED_MARKER,
    applied_text,
    dump,
    hydra_value,
    list_presets,
    load_preset,
    merge_preset,
    preset_params,
    to_plain,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PARAMS, CONFIGS = ROOT / "params.yaml", ROOT / "configs"

#: What the complete preset files held before they became diffs: every value that differs
#: from params.yaml. Merged, each preset must give exactly params.yaml with these changes.
EMORE = {"uri": "s3://your-bucket/datasets/faces_emore.zip", "sha256": None}
WEBFACE = {"uri": "s3://your-bucket/datasets/faces_webface_112x112.zip", "sha256": None}
PAPER = {"width": 1.0, "embedding_size": 512, "s": 64.0, "lr": 0.1, "warmup_epochs": 0.0}
PAPER |= {"schedule": "step", "num_workers": 4, "devices": "auto", "val_every": 2000}
OLD_PRESETS: dict[str, dict[str, Any]] = {
    "cpu_smoke": {
        "data.sources.synthface.options.train_identities": 60,
        "data.sources.synthface.options.train_images_per_identity": 8,
        "data.sources.synthface.options.val_identities": 40,
        "data.sources.synthface.options.val_pairs_per_fold": 10,
        "data.sources.synthface.options.megaface_distractors": 100,
        "train.epochs": 2,
        "train.val_every": 0,
        "registry.min_metrics": {"eval.lfw.accuracy": 0.6},
    },
    "ms1mv2_r100_arcface": {
        "data.sources": {"faces_emore": EMORE},
        "align.source": "faces_emore",
        **{f"train.{k}": v for k, v in PAPER.items()},
        "train.backbone": "iresnet100",
        "train.dropout": 0.4,
        "train.epochs": None,
        "train.total_steps": 180_000,
        "train.global_batch_size": 512,
        "train.max_device_batch": 128,
        "train.batch_size": None,
        "train.grad_accumulation": None,
        "train.milestone_steps": [100_000, 160_000],
        "train.checkpoint_every": 2000,
        "registry.primary_metric": "eval.ijbc.tar_far_1e-4",
        "registry.min_metrics": {"eval.lfw.accuracy": 0.995},
    },
    "casia_r50_ablation": {
        "data.sources": {"faces_webface": WEBFACE},
        "align.source": "faces_webface",
        **{f"train.{k}": v for k, v in PAPER.items()},
        "train.backbone": "iresnet50",
        "train.epochs": 34,
        "train.batch_size": 128,
        "train.step_milestones": [20.9, 29.3],
        "train.checkpoint_every": 1000,
        "registry.primary_metric": "eval.ijbc.tar_far_1e-4",
        "registry.min_metrics": {"eval.lfw.accuracy": 0.99},
    },
}


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[last] = value


def _dump_params(name: str | None, variant: str | None = None) -> dict:
    """Every validated value (code defaults filled in) of params.yaml or a merged preset."""
    if name is None:
        return load_params(PARAMS).model_dump(mode="json")
    return preset_params(name, PARAMS, CONFIGS, variant).model_dump(mode="json")


def _overlay(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_the_shipped_presets_are_the_three_recipes() -> None:
    assert list_presets(CONFIGS) == sorted(OLD_PRESETS)


@pytest.mark.parametrize("name", sorted(OLD_PRESETS))
def test_a_preset_is_a_small_diff_of_keys_that_differ(name: str) -> None:
    path = CONFIGS / f"{name}.yaml"
    assert len(path.read_text().splitlines()) < 60
    preset = load_preset(name, CONFIGS)
    assert preset.header.startswith("# ArcFlow preset: ")
    default = yaml.safe_load(PARAMS.read_text())

    def leaves(node: dict, base: Any, where: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and getattr(value.tag, "value", None) is None:
                leaves(value, base[key], f"{where}{key}.")
            else:  # a key that repeats params.yaml's value is noise in a diff
                assert to_plain(value) != base[key], f"{where}{key} repeats params.yaml"

    leaves(preset.overlay, default, "")


@pytest.mark.parametrize("name", sorted(OLD_PRESETS))
def test_merged_preset_equals_the_old_complete_file(name: str) -> None:
    expected = _dump_params(None)
    for dotted, value in OLD_PRESETS[name].items():
        _set(expected, dotted, value)
    if "data.sources" in OLD_PRESETS[name]:  # filled with the code defaults, as validated
        for source in expected["data"]["sources"].values():
            source.update({k: source.get(k) for k in ("md5", "extract", "options", "revision")})
    assert _dump_params(name) == expected


def test_ms1mv2_is_the_papers_recipe() -> None:
    params = preset_params("ms1mv2_r100_arcface", PARAMS, CONFIGS)
    train, registry = params.train, params.registry
    assert train is not None and registry is not None and params.data is not None
    assert (train.backbone, train.total_steps, train.global_batch_size) == (
        "iresnet100",
        180_000,
        512,
    )
    assert (train.milestone_steps, train.dropout, train.lr) == ([100000, 160000], 0.4, 0.1)
    assert (train.s, train.m, train.embedding_size, train.head) == (64.0, 0.5, 512, "arcface")
    assert list(params.data.sources) == ["faces_emore"]  # !replace: SynthFace is gone
    assert registry.primary_metric == "eval.ijbc.tar_far_1e-4"


def test_ablation_variants_are_the_rows_of_the_papers_table() -> None:
    preset = load_preset("casia_r50_ablation", CONFIGS)
    assert len(preset.variants) == 15
    rows = {name: _dump_params("casia_r50_ablation", name)["train"] for name in preset.variants}
    assert (rows["sphereface"]["head"], rows["sphereface"]["m1"]) == ("sphereface", 1.35)
    assert (rows["cosface"]["head"], rows["cosface"]["m"]) == ("cosface", 0.35)
    assert [rows["cm2"][k] for k in ("head", "m1", "m2", "m3")] == ["combined", 0.9, 0.4, 0.15]
    assert rows["triplet"]["extra_losses"] == ["triplet"] and rows["triplet"]["head"] == "none"
    assert rows["ns_intra_inter"]["extra_losses"] == ["intra", "inter"]
    for train in rows.values():  # the rows change the loss only, never the schedule
        assert (train["backbone"], train["epochs"], train["step_milestones"]) == (
            "iresnet50",
            34,
            [20.9, 29.3],
        )


@pytest.mark.parametrize(
    ("name", "variant"),
    [(name, None) for name in sorted(OLD_PRESETS)]
    + [("casia_r50_ablation", v) for v in ("sphereface", "cm1", "ns_intra_inter", "triplet")],
)
def test_dvc_set_params_give_the_same_params_as_the_merge(
    tmp_path: Path, name: str, variant: str | None
) -> None:
    """`dvc exp run -S` applied by DVC's own code writes exactly the merged values."""
    from dvc.utils.hydra import apply_overrides

    merged = merge_preset(load_preset(name, CONFIGS), PARAMS, variant)
    copy = tmp_path / "params.yaml"
    shutil.copy(PARAMS, copy)
    apply_overrides(copy, merged.overrides)
    assert yaml.safe_load(copy.read_text()) == to_plain(merged.document)
    assert load_params(copy) == preset_params(name, PARAMS, CONFIGS, variant)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -3,
        1099511627776,
        0.1,
        1e-06,
        -2.5e20,
        "auto",
        "null",
        "True",
        "1.0",
        "",
        "s3://bucket/a b/c.zip",
        'say "hi"',
        "it's",
        "back\\slash\\",
        'tricky\\"',
        "ünï",
        [],
        [1, "a", None],
        {"eval.lfw.accuracy": 0.9, "nested": {"k": [1.5]}},
    ],
)
def test_hydra_value_reads_back_as_the_value(value: Any) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"k={hydra_value(value)}"])
    assert override.value() == value
    assert type(override.value()) is type(value)


def test_interpolation_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"interpolation"):
        hydra_value("${oc.env:HOME}")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("train:\n  learning_rate: 0.1\n", "train.learning_rate: not a key of params.yaml"),
        (
            "data:\n  sources:\n    synthface:\n      options:\n        train_identitis: 3\n",
            "data.sources.synthface.options.train_identitis: not a key of params.yaml",
        ),
        ("data:\n  sources:\n    faces: {uri: /x}\n", "data.sources.faces: not a key"),
        ("trian:\n  lr: 0.1\n", "unknown section 'trian'"),
        ("train:\n  lr: fast\n", "preset mine: train.lr: Input should be a valid number"),
        ("train: !replace\n  lr: 0.1\n", "train: !replace is for mappings of named"),
        ("train:\n  augment: !replace {hflip: 0.1}\n", "train.augment: !replace is for"),
        ("train:\n  lr: !!float 0.1\n  head: !other x\n", "train.head: tag !other not allowed"),
        ("train:\n  lr: !replace 0.1\n", "train.lr: tag !replace not allowed"),
        ("variants:\n  all: {train.lr: 0.1}\n", "variants.all: a variant name"),
        ("variants:\n  v1: {train.lr: 0.1}\n  v2: {train.lrr: 0.2}\n", "train.lrr: not a key"),
        ("train:\n  lr: [0.1\n", "mine.yaml: line 3, column 1 not valid YAML"),
    ],
)
def test_bad_preset_is_one_line_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = _overlay(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        preset = load_preset(str(path))
        for variant in [None, *preset.variants]:
            preset_params(str(path), PARAMS, CONFIGS, variant)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.hint.startswith("fix "), err.value.hint


def test_replace_swaps_a_mapping_and_other_mappings_merge(tmp_path: Path) -> None:
    path = _overlay(
        tmp_path,
        "data:\n  sources: !replace\n    mine: {uri: /data/mine}\n  retry:\n    attempts: 2\n"
        "align:\n  source: mine\n",
    )
    params = preset_params(str(path), PARAMS, CONFIGS)
    assert params.data is not None
    assert list(params.data.sources) == ["mine"]
    assert (params.data.retry.attempts, params.data.retry.backoff_s) == (2, 0.5)


def test_applied_file_keeps_params_comments_and_takes_the_presets(tmp_path: Path) -> None:
    preset = load_preset("ms1mv2_r100_arcface", CONFIGS)
    text = applied_text(preset, merge_preset(preset, PARAMS))
    lines = text.splitlines()
    assert lines[0].startswith(f"{APPLIED_MARKER} ms1mv2_r100_arcface")
    assert "# ArcFlow preset: the paper's main recipe." in text
    dropout = next(i for i, line in enumerate(lines) if line.startswith("  dropout:"))
    assert lines[dropout].startswith("  dropout: 0.4                  # the paper's BN-Dropout")
    assert lines[dropout + 1].strip() == "# code the paper used; 0.0 = arcface_torch's default)"
    default = PARAMS.read_text()
    export = default[default.index("\nexport:") : default.index("\nserve:")]
    assert export in text  # untouched sections: byte for byte, comments and all
    assert "  momentum: 0.9\n" in text and "    synthface:" not in text
    assert "\n\n\nalign:" not in text and "\n\nalign:" in text  # no stray blank lines
    applied = tmp_path / "params.yaml"
    applied.write_text(text)
    assert load_params(applied) == preset_params("ms1mv2_r100_arcface", PARAMS, CONFIGS)


def test_merge_onto_an_applied_file_is_refused(tmp_path: Path) -> None:
    preset = load_preset("cpu_smoke", CONFIGS)
    applied = tmp_path / "params.yaml"
    applied.write_text(applied_text(preset, merge_preset(preset, PARAMS)))
    with pytest.raises(ConfigError, match="a preset was applied to it already"):
        merge_preset(load_preset("ms1mv2_r100_arcface", CONFIGS), applied)


def test_merging_leaves_the_unchanged_document_as_it_was() -> None:
    empty = load_preset("cpu_smoke", CONFIGS)
    empty.overlay.clear()
    assert dump(merge_preset(empty, PARAMS).document) == PARAMS.read_text()


def test_cli_show_prints_the_dvc_command() -> None:
    args = ["preset", "show", "casia_r50_ablation", "--variant", "cosface"]
    result = CliRunner().invoke(app, [*args, "--params", str(PARAMS), "--configs", str(CONFIGS)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("dvc exp run --name cosface")
    assert "-S train.head=cosface" in result.output and "-S train.m=0.35" in result.output
    assert "-S '~data.sources'" in result.output


def test_cli_apply_writes_the_merged_params(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(PARAMS, params)
    args = ["preset", "apply", "cpu_smoke", "--params", str(params), "--configs", str(CONFIGS)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_params(params) == preset_params("cpu_smoke", PARAMS, CONFIGS)
    again = CliRunner().invoke(app, args)  # onto an applied file: refused, file untouched
    assert again.exit_code == 1 and "git checkout" in again.output
    assert load_params(params).train.epochs == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["show", "nope"], "no such preset; presets in"),
        (["show", "casia_r50_ablation", "--variant", "arcfce"], "no variant 'arcfce'"),
        (["run", "casia_r50_ablation", "--variant", "all"], "15 variants need --queue"),
        (["run", "cpu_smoke", "-S", "other.yaml:a=1"], "presets set params.yaml only"),
        (["run", "cpu_smoke", "-S", "train.epoch=3"], "Could not override 'train.epoch'"),
        (["run", "cpu_smoke", "-S", "train.epochs=0"], "train.epochs: Input should be greater"),
    ],
)
def test_cli_refuses_with_one_line_before_running_dvc(
    args: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # run reads ./params.yaml, as DVC does
    called: list = []
    monkeypatch.setattr("arcflow.preset_cli.subprocess.call", lambda *a, **k: called.append(a))
    result = CliRunner().invoke(app, ["preset", *args])
    assert result.exit_code == 1, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not called
