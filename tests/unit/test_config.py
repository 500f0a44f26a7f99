"""params.yaml validation: the shipped file is valid; bad keys/types/values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from arcflow.config import SECTIONS, Section, SynthFaceParams, load_params
from arcflow.errors import ConfigError
from arcflow.presets import list_presets, preset_params

pytestmark = pytest.mark.unit


def _write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def shipped(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_shipped_params_and_presets_are_valid(repo_root: Path) -> None:
    default, configs = repo_root / "params.yaml", repo_root / "configs"
    for preset in ["params.yaml", *list_presets(configs)]:  # presets: merged onto params.yaml
        if preset == "params.yaml":
            params = load_params(default)
        else:
            params = preset_params(preset, default, configs)
        assert all(getattr(params, name) is not None for name in SECTIONS), preset


def test_shipped_params_set_every_key_explicitly(shipped: dict) -> None:
    """Presets are complete files: no section relies on a code default."""

    def check(raw: dict, model: type, where: str) -> None:
        assert set(raw) == set(model.model_fields), where
        for key, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
                check(raw[key], field.annotation, f"{where}.{key}")

    for name, model in SECTIONS.items():
        if "root" in model.model_fields:  # a mapping of user-named entries (imports)
            assert shipped[name] == {}, name
            continue
        check(shipped[name], model, name)
    options = shipped["data"]["sources"]["synthface"]["options"]
    check(options, SynthFaceParams, "data.sources.synthface.options")


def test_unknown_key_names_key_and_allowed(tmp_path: Path, shipped: dict) -> None:
    shipped["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, shipped), ("train",))
    message = str(err.value)
    assert "train.learning_rate: unknown key" in message
    assert "allowed keys:" in message and "lr" in message
    assert "\n" not in message


def test_nested_unknown_key(tmp_path: Path, shipped: dict) -> None:
    shipped["data"]["sources"]["synthface"]["options"]["identities"] = 3
    with pytest.raises(
        ConfigError, match=r"data\.sources\.synthface\.options\.identities: unknown key"
    ):
        load_params(_write(tmp_path, shipped), ("data",))


def test_bad_type_names_key_and_value(tmp_path: Path, shipped: dict) -> None:
    shipped["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"train\.lr: .*valid number.*'fast'"):
        load_params(_write(tmp_path, shipped), ("train",))


def test_bad_choice_lists_allowed_values(tmp_path: Path, shipped: dict) -> None:
    shipped["train"]["head"] = "arcfce"
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, shipped), ("train",))
    assert "train.head" in str(err.value) and "'arcface'" in str(err.value)


def test_out_of_range_value(tmp_path: Path, shipped: dict) -> None:
    shipped["data"]["sources"]["synthface"]["options"]["difficulty"] = 1.5
    with pytest.raises(
        ConfigError, match=r"data\.sources\.synthface\.options\.difficulty: .*less than or eq"
    ):
        load_params(_write(tmp_path, shipped), ("data",))


def test_missing_section(tmp_path: Path, shipped: dict) -> None:
    del shipped["evaluate"]
    with pytest.raises(ConfigError, match="missing section 'evaluate'"):
        load_params(_write(tmp_path, shipped), ("evaluate",))
    load_params(_write(tmp_path, shipped), ("train",))  # other stages are unaffected


def test_unknown_section(tmp_path: Path, shipped: dict) -> None:
    shipped["trian"] = shipped.pop("train")
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        load_params(_write(tmp_path, shipped), ("evaluate",))


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ({"uri": "ftp://host/x.zip"}, "uri scheme must be one of"),
        ({"uri": "s3://b/k", "sha256": "abc"}, "sha256"),
        ({"uri": "s3://b/k", "options": {"seed": 1}}, "options are for synthetic"),
        ({"uri": "synthetic://other"}, "only synthetic source"),
    ],
)
def test_bad_source(tmp_path: Path, shipped: dict, source: dict, fragment: str) -> None:
    shipped["data"]["sources"]["extra"] = source
    with pytest.raises(ConfigError, match=r"data\.sources\.extra") as err:
        load_params(_write(tmp_path, shipped), ("data",))
    assert fragment in str(err.value)


def test_source_names_are_path_safe(tmp_path: Path, shipped: dict) -> None:
    shipped["data"]["sources"]["../escape"] = {"uri": "s3://b/k"}
    with pytest.raises(ConfigError, match=r"data\.sources"):
        load_params(_write(tmp_path, shipped), ("data",))


def test_retinaface_needs_weights(tmp_path: Path, shipped: dict) -> None:
    shipped["align"]["detector"] = "retinaface"
    with pytest.raises(ConfigError, match="needs retinaface_weights"):
        load_params(_write(tmp_path, shipped), ("align",))
    shipped["align"]["retinaface_weights"] = "data/raw/retinaface/Resnet50_Final.pth"
    assert load_params(_write(tmp_path, shipped), ("align",)).align.detector == "retinaface"


def test_step_schedule_needs_milestones(tmp_path: Path, shipped: dict) -> None:
    shipped["train"]["schedule"] = "step"
    shipped["train"]["step_milestones"] = []
    with pytest.raises(ConfigError, match="step_milestones"):
        load_params(_write(tmp_path, shipped), ("train",))


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: line \d+"):
        load_params(path)


@pytest.mark.parametrize(
    ("train", "fragment"),
    [
        ({"head": "softmax", "extra_losses": ["intra"]}, "intra/inter need a margin head"),
        ({"partial_fc": True, "extra_losses": ["inter"]}, "without partial_fc"),
        ({"head": "none"}, "add triplet"),
        ({"extra_losses": ["triplet"]}, "images_per_identity >= 2"),
        ({"images_per_identity": 5}, "multiple of images_per_identity"),
        ({"head": "softmax", "partial_fc": True}, "partial_fc needs a margin head"),
        ({"sample_rate": 0.0}, "train.sample_rate"),
    ],
)
def test_loss_settings_must_fit_the_head(
    tmp_path: Path, shipped: dict, train: dict, fragment: str
) -> None:
    shipped["train"].update(train)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(shipped))
    with pytest.raises(ConfigError, match=fragment):
        load_params(path, ["train"])
