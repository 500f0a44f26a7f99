"""ONNX recognition models (insightface's model packs) as canonical ArcFlow ONNX backbones.

The source graph's conventions are detected the way insightface's recognition loader reads
them: the input's name, size and batch, whether the graph normalises raw pixels itself (a
``Sub`` and a ``Mul``/``Div`` at its start) or expects ``(x - 127.5) / 127.5``, and RGB input
(``--colour bgr`` for models trained on BGR). The graph is then rewritten to ArcFlow's own
contract (:data:`arcflow.export.onnx.CONTRACT`): one input ``data``, float32
``(N, 3, 112, 112)``, RGB, ``(x / 255 - 0.5) / 0.5``, dynamic batch; one output ``embedding``,
float32 ``(N, D)``, raw. A graph with a fixed batch of 1 becomes the body of a ``Scan`` over
the batch axis. The result is checked against the source with ONNX Runtime before it is kept.

Nothing outside the file is read: external-data tensors are refused, never followed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from arcflow.errors import DataFormatError, ExportError, first_line
from arcflow.export.onnx import CONTRACT, INPUT_NAME, OUTPUT_NAME

#: protobuf cannot parse one message above 2 GiB; larger files would need external data.
MAX_BYTES = 2 * 1024**3
#: ArcFlow's aligned crops are 112x112.
SIZE = 112
#: ``Scan`` with ``scan_input_axes`` (opset 9); older graphs are upgraded to this opset.
MIN_OPSET, UPGRADE_OPSET = 9, 11
#: insightface looks for the normalisation among the first nodes (by name).
_HEAD_NODES = 8
_SUB_NAMES, _SCALE_NAMES = ("Sub", "_minus"), ("Mul", "_mul")
#: Ops that may sit between the input and its normalisation.
_PREAMBLE = {"Sub", "Mul", "Div", "Cast", "Identity"}
_FLOAT_NAMES = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.DOUBLE: "float64",
}


@dataclass(frozen=True)
class Conventions:
    """What the source graph expects and how its batch is handled (``import.json``)."""

    input_name: str
    input_size: tuple[int, int]  # (H, W)
    batch: str  # "1" (fixed) | "dynamic"
    normalisation: str  # "inside" (raw 0..255 pixels in) | "outside"
    input_mean: float
    input_std: float
    colour: str  # "rgb" | "bgr"
    colour_from: str  # "default" (insightface feeds RGB) | "option"
    output_name: str
    embedding_size: int
    opset: int
    batch_handling: str = ""  # "native" | "scan": how the canonical graph embeds a batch

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_size": list(self.input_size)}


@dataclass(frozen=True)
class Converted:
    """The canonical model of an ONNX file and what is known about it."""

    model: onnx.ModelProto
    conventions: Conventions
    stored_dtype: str  # of the source's weights
    parity: dict[str, float]  # canonical vs source (:func:`self_check`)


def convert(
    path: Path, where: str, *, colour: str | None = None, metadata: dict[str, str] | None = None
) -> Converted:
    """The canonical model of the ONNX file ``path``, checked against it. ``where`` names the
    file in messages; ``metadata`` joins ArcFlow's contract in the model's properties."""
    source = read_model(path, where)
    conventions = detect(source, where, colour=colour)
    upgraded = _upgrade(source, where) if conventions.opset < MIN_OPSET else source
    routes = ["native", "scan"] if conventions.batch == "dynamic" else ["scan"]
    failure: ExportError | None = None
    for route in routes:  # a "dynamic" graph that mishandles batches falls back to Scan
        conventions = _with(conventions, batch_handling=route)
        canonical = canonicalise(upgraded, conventions, scan=route == "scan")
        _finish(canonical, {**(metadata or {}), "conventions": _json(conventions.as_dict())})
        try:
            _check(canonical, where)
            parity = self_check(source, canonical, conventions, where)
        except ExportError as exc:
            failure = exc
            continue
        return Converted(canonical, conventions, stored_dtype(source.graph), parity)
    assert failure is not None
    raise failure


def read_model(path: Path, where: str) -> onnx.ModelProto:
    """Parse ``path`` (size-checked first); refuse external data without following it."""
    from google.protobuf.message import DecodeError

    size = Path(path).stat().st_size
    if size > MAX_BYTES:
        raise DataFormatError(
            f"{where}: {size / 1024**3:.1f} GiB, above the 2 GiB an ONNX file can hold in one piece"
        )
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise DataFormatError(
            f"{where}: not a readable ONNX model (truncated or corrupt?): {first_line(exc)}"
        ) from None
    external = [t.name or "(unnamed)" for t in _tensors(model.graph) if _is_external(t)]
    if external:
        raise DataFormatError(
            f"{where}: tensors stored outside the file ({_some(external)}): refused, "
            "the model must be self-contained",
            hint="save it with onnx.save(model, path, save_as_external_data=False)",
        )
    return model


def detect(model: onnx.ModelProto, where: str, *, colour: str | None = None) -> Conventions:
    """The source graph's conventions; refuse graphs that are not one image in, one
    ``(N, D)`` embedding out."""
    graph = model.graph
    constants = {t.name for t in graph.initializer} | {
        t.values.name for t in graph.sparse_initializer
    }
    inputs = [v for v in graph.input if v.name not in constants]
    if len(inputs) != 1:
        names = ", ".join(v.name for v in inputs)
        raise DataFormatError(f"{where}: {len(inputs)} inputs ({names}): expected one image input")
    if len(graph.output) != 1:
        names = ", ".join(v.name for v in graph.output)
        raise DataFormatError(
            f"{where}: {len(graph.output)} outputs ({names}): expected one embedding output"
        )
    image, output = inputs[0], graph.output[0]
    batch, size = _input_layout(image, where)
    dims = _dims(output, where, "output")
    if dims is None or len(dims) != 2 or dims[1] is None or dims[1] <= 0:
        raise DataFormatError(
            f"{where}: output '{output.name}' is {_shape(dims)}: expected (N, D) with a fixed D"
        )
    inside = _normalises_inside(graph, image.name)
    return Conventions(
        input_name=image.name,
        input_size=(size, size),
        batch=batch,
        normalisation="inside" if inside else "outside",
        input_mean=0.0 if inside else 127.5,
        input_std=1.0 if inside else 127.5,
        colour=colour or "rgb",
        colour_from="default" if colour is None else "option",
        output_name=output.name,
        embedding_size=dims[1],
        opset=_opset(model, where),
    )


def canonicalise(model: onnx.ModelProto, conv: Conventions, *, scan: bool) -> onnx.ModelProto:
    """``model`` rewritten to ArcFlow's contract: preprocessing prepended, renamed I/O, and
    (``scan``) the source graph run once per row as the body of a ``Scan``."""
    canonical = onnx.ModelProto()
    canonical.CopyFrom(model)
    canonical.ClearField("training_info")  # refers to the source graph's names
    graph = canonical.graph
    taken = _names(graph) | {INPUT_NAME, OUTPUT_NAME}
    fresh = _Fresh(taken)
    renames = {n: fresh(n) for n in (INPUT_NAME, OUTPUT_NAME) if n in _names(graph)}
    _rename(graph, renames)
    source_in = renames.get(conv.input_name, conv.input_name)
    source_out = renames.get(conv.output_name, conv.output_name)
    opset, d = _opset(canonical, ""), conv.embedding_size
    pre_nodes, pre_init, pre_out = _preprocess(conv, INPUT_NAME, fresh)
    if scan:
        body = _scan_body(graph, conv, source_in, source_out, opset, fresh)
        scanned = fresh("embeddings")
        scan_node = _node("Scan", [pre_out], [scanned], fresh, body=body, num_scan_inputs=1)
        nodes = [*pre_nodes, scan_node, _node("Identity", [scanned], [OUTPUT_NAME], fresh)]
        initializers, sparse = pre_init, []
    else:  # the preprocessing ends in the source's input
        if pre_nodes:
            pre_nodes[-1].output[0] = source_in
        else:
            pre_nodes = [_node("Identity", [INPUT_NAME], [source_in], fresh)]
        last = _node("Identity", [source_out], [OUTPUT_NAME], fresh)
        nodes = [*pre_nodes, *graph.node, last]
        initializers = [*pre_init, *graph.initializer]
        sparse = list(graph.sparse_initializer)
    # initializers are no longer listed as inputs (IR >= 4); the source's shape hints
    # (value_info, a fixed batch) are left out and inferred again
    new_graph = helper.make_graph(
        nodes,
        graph.name or "arcflow_imported",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", d])],
        initializer=initializers,
        sparse_initializer=sparse,
        doc_string=graph.doc_string,
    )
    canonical.graph.CopyFrom(new_graph)
    needed = helper.find_min_ir_version_for(list(canonical.opset_import), ignore_unknown=True)
    canonical.ir_version = max(canonical.ir_version, 4, needed)
    return canonical


def self_check(
    source: onnx.ModelProto,
    canonical: onnx.ModelProto,
    conv: Conventions,
    where: str,
    *,
    rows: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Run both with ONNX Runtime on ``rows`` random canonical inputs (the source one row at a
    time, preprocessed with numpy by its conventions); ExportError when they differ by more
    than ``1e-4`` (relative to the embeddings' scale). Returns the parity report, with the
    keys of :func:`arcflow.export.onnx.check_parity`'s."""
    x = np.random.default_rng(seed).uniform(-1, 1, (rows, 3, SIZE, SIZE)).astype(np.float32)
    reference = _session(source, f"{where}: onnxruntime cannot load it", DataFormatError)
    expected = []
    for row in _source_input(x, conv):
        try:
            out = reference.run([conv.output_name], {conv.input_name: row[None]})[0]
        except Exception as exc:  # onnxruntime raises its own untyped errors
            detail = first_line(exc)
            raise DataFormatError(f"{where}: onnxruntime cannot run it: {detail}") from None
        if np.shape(out) != (1, conv.embedding_size):
            raise DataFormatError(
                f"{where}: output '{conv.output_name}' is {np.shape(out)} at run time, "
                f"declared (N, {conv.embedding_size})"
            )
        expected.append(np.asarray(out, np.float32))
    want = np.concatenate(expected)
    try:
        session = _session(canonical, f"{where}: the canonical model does not load", ExportError)
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    except Exception as exc:
        raise ExportError(
            f"{where}: the canonical model fails on a batch of {rows}: {first_line(exc)}"
        ) from None
    got = np.asarray(got[0], np.float32)
    if got.shape != want.shape:
        raise ExportError(f"{where}: the canonical model gives {got.shape}, expected {want.shape}")
    diff = np.abs(got - want)
    if diff.max() > 1e-4 * max(1.0, float(np.abs(want).max())):
        raise ExportError(
            f"{where}: the canonical model differs from the source by {diff.max():.3g}"
        )
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1) + 1e-12
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "min_cosine": float((np.sum(got * want, axis=1) / norms).min()),
        "parity_batch": float(rows),
        "parity_real": 0.0,
    }


def stored_dtype(graph: onnx.GraphProto) -> str:
    """The floating-point type holding most of the weights (initializers and constants)."""
    counts: Counter[str] = Counter()
    for tensor in _tensors(graph):
        if tensor.data_type in _FLOAT_NAMES:
            counts[_FLOAT_NAMES[tensor.data_type]] += int(np.prod(tensor.dims, dtype=np.int64))
    return counts.most_common(1)[0][0] if counts else "none"


def describe(conventions: dict[str, Any]) -> str:
    """One phrase for the CLI: ``512-d, normalised inside the graph, fixed batch 1 → ...``."""
    c = conventions
    where = "inside the graph" if c["normalisation"] == "inside" else "outside the graph"
    if c["batch"] == "1":
        batch = "fixed batch 1 → dynamic (Scan)"
    elif c.get("batch_handling") == "scan":
        batch = "dynamic batch that only embeds one image → Scan"
    else:
        batch = "dynamic batch"
    colour = f"{c['colour'].upper()} ({c['colour_from']})"
    return f"{c['embedding_size']}-d, normalised {where}, {batch}, {colour}"


# -- detection ---------------------------------------------------------------------------


def _input_layout(image: onnx.ValueInfoProto, where: str) -> tuple[str, int]:
    """(batch "1" | "dynamic", size) of an NCHW float32 image input; refuse anything else."""
    if image.type.tensor_type.elem_type != TensorProto.FLOAT:
        kind = TensorProto.DataType.Name(image.type.tensor_type.elem_type)
        raise DataFormatError(f"{where}: input '{image.name}' is {kind}: expected float32")
    dims = _dims(image, where, "input")
    if dims is None or len(dims) != 4 or dims[1] != 3:
        raise DataFormatError(
            f"{where}: input '{image.name}' is {_shape(dims)}: expected (N, 3, H, W), RGB or BGR"
        )
    n, _, h, w = dims
    if h is not None and w is not None and h != w:
        raise DataFormatError(
            f"{where}: input '{image.name}' is {_shape(dims)}: not square (H {h} != W {w})"
        )
    size = h if h is not None else (w if w is not None else SIZE)
    if size != SIZE:
        raise DataFormatError(
            f"{where}: input '{image.name}' is {size}x{size}: ArcFlow's aligned crops are "
            f"{SIZE}x{SIZE}"
        )
    if n is not None and n > 1:
        raise DataFormatError(
            f"{where}: input '{image.name}' has a fixed batch of {n}: expected 1 or dynamic"
        )
    return ("1" if n == 1 else "dynamic"), size


def _normalises_inside(graph: onnx.GraphProto, input_name: str) -> bool:
    """Whether the graph turns raw pixels into its input range itself.

    insightface's rule, a ``Sub`` and a ``Mul`` among the first 8 nodes (by name: ``Sub…`` /
    ``_minus…``, ``Mul…`` / ``_mul…``), made independent of exporters' naming and node order:
    the nodes are those on the input's path through elementwise ops, their op type counts as
    well as their name, and ``Div`` counts as a scale.
    """
    reached, seen, sub, scale = {input_name}, 0, False, False
    for node in graph.node:
        if seen >= _HEAD_NODES:
            break
        if node.op_type not in _PREAMBLE or not reached.intersection(node.input):
            continue
        seen += 1
        reached.update(node.output)
        sub = sub or node.op_type == "Sub" or node.name.startswith(_SUB_NAMES)
        scale = scale or node.op_type in ("Mul", "Div") or node.name.startswith(_SCALE_NAMES)
    return sub and scale


def _dims(value: onnx.ValueInfoProto, where: str, what: str) -> list[int | None] | None:
    """The declared dims (None: symbolic or unknown; 0 and -1 count as unknown)."""
    if not value.type.HasField("tensor_type"):
        raise DataFormatError(f"{where}: {what} '{value.name}' is not a tensor")
    if not value.type.tensor_type.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in value.type.tensor_type.shape.dim
    ]


def _opset(model: onnx.ModelProto, where: str) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise DataFormatError(f"{where}: no ONNX opset in the model (truncated?)")


def _upgrade(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """``model`` converted to :data:`UPGRADE_OPSET` (``Scan`` and broadcasting need opset 9)."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, UPGRADE_OPSET)
    except Exception as exc:  # the converter raises untyped C++ errors
        raise DataFormatError(
            f"{where}: opset {_opset(model, where)} is older than {MIN_OPSET} and onnx's "
            f"version converter cannot upgrade it: {first_line(exc)}",
            hint=f"re-export the model with opset {MIN_OPSET} or later",
        ) from None


# -- graph surgery -------------------------------------------------------------------------


class _Fresh:
    """New names that collide with nothing in the graph: ``arcflow_<stem>[_<n>]``."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __call__(self, stem: str) -> str:
        name, n = f"arcflow_{stem}", 0
        while name in self.taken:
            n += 1
            name = f"arcflow_{stem}_{n}"
        self.taken.add(name)
        return name


def _preprocess(
    conv: Conventions, source: str, fresh: _Fresh
) -> tuple[list[onnx.NodeProto], list[TensorProto], str]:
    """Nodes from the canonical input to what the model expects: a channel flip (BGR) and
    ``x * 127.5/std + (127.5 - mean)/std`` (skipped when the identity); their constants and
    the last value's name (``source`` when nothing is needed)."""
    nodes: list[onnx.NodeProto] = []
    constants: list[TensorProto] = []
    current = source
    if conv.colour == "bgr":
        index = fresh("bgr_order")
        constants.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), index))
        nodes.append(_node("Gather", [current, index], [fresh("bgr")], fresh, axis=1))
        current = nodes[-1].output[0]
    scale = 127.5 / conv.input_std
    shift = (127.5 - conv.input_mean) / conv.input_std
    for op, value, stem in (("Mul", scale, "scale"), ("Add", shift, "shift")):
        if value == (1.0 if op == "Mul" else 0.0):
            continue
        name = fresh(stem)
        constants.append(numpy_helper.from_array(np.array(value, np.float32), name))
        nodes.append(_node(op, [current, name], [fresh(f"{stem}d")], fresh))
        current = nodes[-1].output[0]
    return nodes, constants, current


def _scan_body(
    graph: onnx.GraphProto,
    conv: Conventions,
    source_in: str,
    source_out: str,
    opset: int,
    fresh: _Fresh,
) -> onnx.GraphProto:
    """The source graph for one row: ``(3, H, W)`` unsqueezed in, ``(1, D)`` squeezed out."""
    row, embedded = fresh("row"), fresh("row_embedding")
    initializers = list(graph.initializer)
    if opset >= 13:  # axes became an input
        axes = fresh("axis0")
        initializers.append(numpy_helper.from_array(np.array([0], np.int64), axes))
        unsqueeze = _node("Unsqueeze", [row, axes], [source_in], fresh)
        squeeze = _node("Squeeze", [source_out, axes], [embedded], fresh)
    else:
        unsqueeze = _node("Unsqueeze", [row], [source_in], fresh, axes=[0])
        squeeze = _node("Squeeze", [source_out], [embedded], fresh, axes=[0])
    h, w = conv.input_size
    return helper.make_graph(
        [unsqueeze, *graph.node, squeeze],
        fresh("row_graph"),
        [helper.make_tensor_value_info(row, TensorProto.FLOAT, [3, h, w])],
        [helper.make_tensor_value_info(embedded, TensorProto.FLOAT, [conv.embedding_size])],
        initializer=initializers,
        sparse_initializer=list(graph.sparse_initializer),
    )


def _node(
    op: str, inputs: list[str], outputs: list[str], fresh: _Fresh, **attrs: Any
) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, name=fresh(op.lower()), **attrs)


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every graph nested in its nodes' attributes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _subgraphs(sub)


def _names(graph: onnx.GraphProto) -> set[str]:
    """Every value, node and graph name in ``graph`` and its subgraphs."""
    names: set[str] = set()
    for g in _subgraphs(graph):
        names.add(g.name)
        names.update(v.name for v in [*g.input, *g.output, *g.value_info, *g.initializer])
        names.update(t.values.name for t in g.sparse_initializer)
        for node in g.node:
            names.add(node.name)
            names.update(node.input)
            names.update(node.output)
    names.discard("")
    return names


def _rename(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Rename values (``mapping``) everywhere in ``graph`` and its subgraphs, in place."""
    if not mapping:
        return
    for g in _subgraphs(graph):
        for node in g.node:
            node.input[:] = [mapping.get(n, n) for n in node.input]
            node.output[:] = [mapping.get(n, n) for n in node.output]
        for value in [*g.input, *g.output, *g.value_info, *g.initializer]:
            value.name = mapping.get(value.name, value.name)
        for sparse in g.sparse_initializer:
            sparse.values.name = mapping.get(sparse.values.name, sparse.values.name)


def _tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor stored in ``graph``: initializers and node attributes, subgraphs too."""
    for g in _subgraphs(graph):
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)


def _is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0


# -- checks and helpers --------------------------------------------------------------------


def _source_input(x: np.ndarray, conv: Conventions) -> np.ndarray:
    """Canonical inputs as the source model expects them (numpy, for the self-check)."""
    pixels = x * np.float32(127.5) + np.float32(127.5)
    if conv.colour == "bgr":
        pixels = pixels[:, ::-1]
    return np.ascontiguousarray(
        (pixels - np.float32(conv.input_mean)) / np.float32(conv.input_std), np.float32
    )


def _session(model: onnx.ModelProto, failure: str, error: type[Exception]) -> Any:
    """An ONNX Runtime CPU session of ``model``, or ``error(failure: why)``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise error(f"{failure}: {first_line(exc)}") from None


def _finish(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """ArcFlow's contract and ``metadata`` as the model's metadata properties (replacing)."""
    del model.metadata_props[:]
    helper.set_model_props(model, {**CONTRACT, **{k: str(v) for k, v in metadata.items()}})


def _check(model: onnx.ModelProto, where: str) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(
            f"{where}: the canonical model fails onnx.checker: {first_line(exc)}"
        ) from None


def _with(conv: Conventions, **changes: Any) -> Conventions:
    return Conventions(**{**asdict(conv), **changes})


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _shape(dims: list[int | None] | None) -> str:
    if dims is None:
        return "of unknown shape"
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _some(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")
