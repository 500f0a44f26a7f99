"""Presets: small diffs over params.yaml (``configs/<name>.yaml``), run as DVC experiments.

A preset file holds only the keys whose value differs from the default params.yaml, nested as
in params.yaml, with comments saying why. Merging walks it onto params.yaml:

- a mapping merges key by key; anything else (scalar, list) replaces the value;
- a mapping tagged ``!replace`` replaces params.yaml's mapping whole (how a paper recipe swaps
  ``data.sources`` for its dataset);
- a key params.yaml lacks is an error naming it (a typo would otherwise do nothing).

The same walk gives the ``dvc exp run -S`` arguments (Hydra's override grammar) that make
DVC apply the diff itself, so params.yaml stays the only file stages read and each preset run
is an experiment in ``dvc exp show``. An optional top-level ``variants`` mapping names further
diffs on top (``name: {dotted.key: value}``), e.g. the rows of an ablation table.
"""

from __future__ import annotations

import copy
import io
import math
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, RootModel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tag import Tag
from ruamel.yaml.tokens import CommentToken

from arcflow.config import SECTIONS, Params, load_params
from arcflow.errors import ConfigError

CONFIGS_DIR = Path("configs")
REPLACE_TAG = "!replace"
VARIANTS_KEY = "variants"
ALL_VARIANTS = "all"
#: First line of a params.yaml written by :func:`applied_text`; presets diff the default only.
APPLIED_MARKER = "# arcflow preset apply"

_HYDRA_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")  # one segment of an override's key path
_HYDRA_DICT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")  # a key inside a {…} value
_HYDRA_WORDS = {"null", "true", "false", "inf", "nan"}
_BARE_STRING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # needs no quotes: iresnet100, auto
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")  # usable as a DVC experiment name
_EOL_COLUMN = 32  # where params.yaml aligns its end-of-line comments


class PresetError(ConfigError):
    """A preset file is malformed, or names a key params.yaml lacks."""

    hint = "fix the preset file; params.yaml's comments list every key and its allowed values"


@dataclass(frozen=True)
class Preset:
    """One parsed preset file: its recipe comment, the params diff and named variants."""

    name: str
    path: Path
    header: str
    overlay: CommentedMap
    variants: dict[str, CommentedMap] = field(default_factory=dict)


@dataclass(frozen=True)
class Merged:
    """A preset (and variant) merged onto params.yaml: the document and DVC's arguments."""

    document: CommentedMap
    overrides: list[str]
    label: str


def _yaml() -> YAML:
    """Round-trip YAML that writes params.yaml back as it was read (``null`` stays ``null``)."""
    yaml = YAML()
    yaml.width = 4096
    yaml.preserve_quotes = True
    yaml.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return yaml


def _load_yaml(path: Path, what: str, error: type[ConfigError] = ConfigError) -> CommentedMap:
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found", hint="run from the repository root")
    try:
        data = _yaml().load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}:{where} not valid YAML ({problem})") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise error(f"{path}: top level must be a mapping of sections")
    return data


def _header(text: str) -> str:
    """The comment block a YAML file starts with."""
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


def _tag(node: Any) -> str | None:
    tag = getattr(node, "tag", None)
    return getattr(tag, "value", None) if isinstance(tag, Tag) else None


def _check_tags(node: Any, where: str, path: Path) -> None:
    """Only mappings may carry a tag, and only ``!replace``."""
    tag = _tag(node)
    if tag is not None and (tag != REPLACE_TAG or not isinstance(node, Mapping)):
        raise PresetError(
            f"{path}: {where}: tag {tag} not allowed; only a mapping may be tagged {REPLACE_TAG}"
        )
    if isinstance(node, Mapping):
        for key, value in node.items():
            _check_tags(value, f"{where}.{key}" if where else str(key), path)
    elif isinstance(node, list):
        for value in node:
            _check_tags(value, where, path)


def _nest(dotted: Mapping[str, Any], where: str, path: Path) -> CommentedMap:
    """``{"train.head": "cosface"}`` -> ``{"train": {"head": "cosface"}}``."""
    nested = CommentedMap()
    for key, value in dotted.items():
        parts = str(key).split(".")
        if not all(parts):
            raise PresetError(f"{path}: {where}: key '{key}' is not a dotted params key")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, CommentedMap())
            if not isinstance(node, CommentedMap):
                raise PresetError(f"{path}: {where}: key '{key}' is set twice")
        node[parts[-1]] = value
    return nested


def preset_path(name: str, configs: Path = CONFIGS_DIR) -> Path:
    """``configs/<name>.yaml`` for a preset name, or ``name`` itself when it is a YAML path."""
    if name.endswith((".yaml", ".yml")):
        return Path(name)
    return configs / f"{name}.yaml"


def list_presets(configs: Path = CONFIGS_DIR) -> list[str]:
    """Names of the presets in ``configs``."""
    return sorted(p.stem for p in configs.glob("*.yaml"))


def load_preset(name: str, configs: Path = CONFIGS_DIR) -> Preset:
    """Parse a preset file: sections and tags are checked here, keys when merging."""
    path = preset_path(name, configs)
    if not path.is_file():
        known = ", ".join(list_presets(configs)) or "none"
        raise PresetError(f"{path}: no such preset; presets in {configs}/: {known}")
    data = _load_yaml(path, "preset", PresetError)
    unknown = [str(k) for k in data if k not in SECTIONS and k != VARIANTS_KEY]
    if unknown:
        allowed = ", ".join([*SECTIONS, VARIANTS_KEY])
        raise PresetError(f"{path}: unknown section '{unknown[0]}'; allowed sections: {allowed}")
    raw_variants = data.pop(VARIANTS_KEY, None) or {}
    if not isinstance(raw_variants, Mapping):
        raise PresetError(f"{path}: {VARIANTS_KEY} must map names to {{dotted.key: value}}")
    _check_tags(data, "", path)
    variants: dict[str, CommentedMap] = {}
    for variant, diff in raw_variants.items():
        where = f"{VARIANTS_KEY}.{variant}"
        if not _VARIANT_NAME.match(str(variant)) or variant == ALL_VARIANTS:
            raise PresetError(
                f"{path}: {where}: a variant name is letters, digits, _ and -"
                f" (not '{ALL_VARIANTS}')"
            )
        if not isinstance(diff, Mapping) or not diff:
            raise PresetError(f"{path}: {where}: must map dotted params keys to values")
        variants[str(variant)] = _nest(diff, where, path)
        _check_tags(variants[str(variant)], where, path)
    header = _header(path.read_text(encoding="utf-8"))
    return Preset(path.stem, path, header, data, variants)


def select_variants(preset: Preset, names: list[str]) -> list[str]:
    """Resolve ``--variant`` names (``all``: every variant, in file order)."""
    if ALL_VARIANTS in names:
        if not preset.variants:
            raise PresetError(f"{preset.path}: has no variants")
        return list(preset.variants)
    for name in names:
        if name not in preset.variants:
            known = ", ".join(preset.variants) or "none"
            raise PresetError(f"{preset.path}: no variant '{name}'; variants: {known}")
    return names


# -- values in Hydra's override grammar (what `dvc exp run -S key=value` parses) -------------


def to_plain(value: Any) -> Any:
    """ruamel's node types as plain Python values."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return bool(value) if type(value).__name__ == "ScalarBoolean" else int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise PresetError(f"value {value!r} of type {type(value).__name__} is not a params value")


def _quote(text: str) -> str:
    """A double-quoted Hydra string: backslashes are literal unless they precede a quote."""
    if "${" in text:
        raise PresetError(f"value '{text}': '${{' would be read as an interpolation by dvc -S")
    doubled = re.sub(r'(\\+)(?="|$)', lambda m: m.group(1) * 2, text)
    return '"' + doubled.replace('"', '\\"') + '"'


def hydra_value(value: Any) -> str:
    """``value`` written in Hydra's override grammar, read back by DVC as exactly ``value``."""
    value = to_plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        bare = _BARE_STRING.match(value) and value.lower() not in _HYDRA_WORDS
        return value if bare else _quote(value)
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    items = []
    for key, item in value.items():
        if not _HYDRA_DICT_KEY.match(key) or key.lower() in _HYDRA_WORDS:
            raise PresetError(f"key '{key}' cannot be written as a dvc exp run -S value")
        items.append(f"{key}:{hydra_value(item)}")
    return "{" + ",".join(items) + "}"


def _is_id(segment: str) -> bool:
    return bool(_HYDRA_ID.match(segment)) and segment.lower() not in _HYDRA_WORDS


# -- merging -----------------------------------------------------------------------------------


def _split_comment(token: CommentToken | None) -> tuple[list[str], str]:
    """A key's comment token as (its end-of-line comment lines, what follows them)."""
    if token is None:
        return [], ""
    lines = token.value.splitlines(keepends=True)
    if not lines or not lines[0].startswith("#"):
        return [], token.value
    own = [lines[0]]
    for line in lines[1:]:
        indent = len(line) - len(line.lstrip(" "))
        if indent != token.column or not line.lstrip(" ").startswith("#"):
            break
        own.append(line)
    return own, "".join(lines[len(own) :])


def _set_token(node: CommentedMap, key: Any, own: list[str], rest: str, column: int) -> None:
    slot = node.ca.items.setdefault(key, [None] * 4)
    text = "".join(own) + rest
    slot[2] = CommentToken(text, CommentMark(column), None) if text else None


def _take_comment(target: CommentedMap, overlay: CommentedMap, key: Any) -> None:
    """Give ``target[key]`` the overlay's end-of-line comment (it explains the preset's value),
    keeping the blank lines and comments that followed params.yaml's own."""
    new_token = overlay.ca.items.get(key, [None] * 4)[2]
    own, _ = _split_comment(new_token)
    if not own:
        return
    old_token = target.ca.items.get(key, [None] * 4)[2]
    old_own, rest = _split_comment(old_token)
    column = old_token.column if old_own else max(_EOL_COLUMN, new_token.column)
    own = [own[0], *(" " * column + line.lstrip(" ") for line in own[1:])]
    if not own[-1].endswith("\n"):
        own[-1] += "\n"
    _set_token(target, key, own, rest, column)


def _last_leaf(node: CommentedMap, key: Any) -> tuple[CommentedMap, Any]:
    """The mapping and key of the last line ``node[key]`` spans (its comments follow it)."""
    while isinstance(node[key], CommentedMap) and node[key]:
        node, key = node[key], list(node[key])[-1]
    return node, key


def _tail(node: CommentedMap, key: Any) -> str:
    """The blank lines and comments after the value of ``node[key]``."""
    leaf, leaf_key = _last_leaf(node, key)
    return _split_comment(leaf.ca.items.get(leaf_key, [None] * 4)[2])[1]


def _set_tail(node: CommentedMap, key: Any, rest: str) -> None:
    leaf, leaf_key = _last_leaf(node, key)
    token = leaf.ca.items.get(leaf_key, [None] * 4)[2]
    own, _ = _split_comment(token)
    _set_token(leaf, leaf_key, own, rest, token.column if token is not None else 0)


def _fresh(value: Any) -> Any:
    """A copy of an overlay value to put into params.yaml: untagged, without its key's comment
    (that moves with :func:`_take_comment`), lists in flow style as params.yaml writes them."""
    if isinstance(value, CommentedMap):
        node = copy.deepcopy(value)
        node.yaml_set_ctag(Tag())
        node.ca.comment = None
        return node
    if isinstance(value, list):
        seq = CommentedSeq(to_plain(value))
        seq.fa.set_flow_style()
        return seq
    return copy.deepcopy(value)


def _schema_type(annotation: Any) -> Any:
    """The type inside ``Annotated[...]``, ``X | None`` and a ``RootModel``."""
    while True:
        origin, args = get_origin(annotation), get_args(annotation)
        if origin is Annotated:
            annotation = args[0]
        elif origin is Union or type(annotation).__name__ == "UnionType":
            kinds = [a for a in args if a is not type(None)]
            if len(kinds) != 1:
                return annotation
            annotation = kinds[0]
        elif isinstance(annotation, type) and issubclass(annotation, RootModel):
            annotation = annotation.model_fields["root"].annotation
        else:
            return annotation


def _named_mapping(path: tuple[str, ...]) -> bool:
    """Whether the params mapping at ``path`` holds entries the user names (``data.sources``,
    ``imports``, ``registry.min_metrics``) rather than a fixed set of keys."""
    node: Any = SECTIONS.get(path[0])
    for segment in path[1:]:
        node = _schema_type(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            if segment not in node.model_fields:
                return False
            node = node.model_fields[segment].annotation
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        else:
            return False
    return get_origin(_schema_type(node)) is dict


def _merge(
    base: CommentedMap, overlay: CommentedMap, path: tuple[str, ...], source: str
) -> list[str]:
    """Merge ``overlay`` into ``base`` in place; return the ``dvc exp run -S`` arguments."""
    overrides: list[str] = []
    for key, value in overlay.items():
        where = (*path, str(key))
        dotted = ".".join(where)
        if key not in base:
            raise PresetError(
                f"{source}: {dotted}: not a key of params.yaml",
                hint=f"fix the key in {source} (a preset only changes keys params.yaml has; "
                f"new entries of a named mapping need {REPLACE_TAG} on the mapping)",
            )
        current = base[key]
        replace = _tag(value) == REPLACE_TAG
        if replace and not _named_mapping(where):
            raise PresetError(
                f"{source}: {dotted}: {REPLACE_TAG} is for mappings of named entries "
                "(data.sources, imports, registry.min_metrics); set this one's keys instead"
            )
        if isinstance(value, Mapping) and isinstance(current, Mapping) and not replace:
            if not _is_id(str(key)):
                raise PresetError(f"{source}: {dotted}: cannot be set by dvc exp run -S")
            overrides += _merge(current, value, where, source)
            continue
        if _is_id(str(key)):
            if replace:
                overrides += [f"~{dotted}"] if current is not None else []
                overrides.append(f"++{dotted}={hydra_value(value)}")
            else:
                overrides.append(f"{dotted}={hydra_value(value)}")
        elif path and not replace:  # e.g. registry.min_metrics' eval.lfw.accuracy
            overrides.append(f"{'.'.join(path)}={hydra_value({str(key): value})}")
        else:
            raise PresetError(f"{source}: {dotted}: cannot be set by dvc exp run -S")
        tail = _tail(base, key)
        base[key] = _fresh(value)
        _take_comment(base, overlay, key)
        _set_tail(base, key, tail)
    return overrides


def _read_base(params: Path) -> CommentedMap:
    text = params.read_text(encoding="utf-8") if params.is_file() else ""
    if text.startswith(APPLIED_MARKER):
        raise ConfigError(
            f"{params}: a preset was applied to it already; presets are diffs over the default",
            hint=f"restore the default first (git checkout {params})",
        )
    return _load_yaml(params, "params file")


def merge_preset(preset: Preset, params: Path, variant: str | None = None) -> Merged:
    """``preset`` (then ``variant``) merged onto the params file ``params``; not validated."""
    document = _read_base(params)
    overrides = _merge(document, preset.overlay, (), str(preset.path))
    label = f"preset {preset.name}"
    if variant is not None:
        (variant,) = select_variants(preset, [variant])
        source = f"{preset.path} ({VARIANTS_KEY}.{variant})"
        overrides += _merge(document, preset.variants[variant], (), source)
        label += f" variant {variant}"
    return Merged(document, overrides, label)


def dump(document: CommentedMap) -> str:
    """The document as YAML text, comments and layout kept."""
    out = io.StringIO()
    _yaml().dump(document, out)
    return out.getvalue()


def validate_text(text: str, label: str, hint: str = "") -> Params:
    """Validate a complete params file given as text exactly as a stage reads params.yaml;
    errors name ``label`` and the key (and give ``hint`` when set)."""
    with tempfile.TemporaryDirectory(prefix="arcflow-preset-") as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return load_params(path)
        except ConfigError as exc:
            message = str(exc).replace(str(path), label)
            raise ConfigError(message, hint=hint or exc.hint) from None


def preset_params(
    name: str,
    params: Path = Path("params.yaml"),
    configs: Path = CONFIGS_DIR,
    variant: str | None = None,
) -> Params:
    """The validated params a preset (and variant) gives: what its experiment's stages read."""
    preset = load_preset(name, configs)
    merged = merge_preset(preset, params, variant)
    return validate_text(dump(merged.document), merged.label, fix_hint(preset))


def fix_hint(preset: Preset) -> str:
    """The hint of a preset's validation errors."""
    return f"fix {preset.path}; params.yaml's comments list every key and its allowed values"


def applied_text(preset: Preset, merged: Merged, variant: str | None = None) -> str:
    """The merged params.yaml as ``arcflow preset apply`` writes it: the preset's recipe comment
    and a marker line replace params.yaml's header."""
    body = dump(merged.document)
    body = body[len(_header(body)) :].lstrip("\n")
    what = f"{preset.name}" + (f" --variant {variant}" if variant else "")
    marker = f"{APPLIED_MARKER} {what}: {preset.path} merged onto the default\n"
    return f"{marker}{preset.header}\n{body}"
