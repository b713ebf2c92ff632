"""Channels-last regions: connected com.im2win::Conv nodes of a rewritten model switched to
layout="NHWC", with a Transpose only where a value enters or leaves a region.

A region is a set of 2-D com.im2win::Conv nodes and of the ops between them that run channels-last
too: ONNX MaxPool and AveragePool (which become com.im2win's channels-last pools), element-wise
ops of one input (Relu, Clip, ...: unchanged), Concat on the channel axis (then on axis 3) and
inference BatchNormalization (a depthwise 1x1 channels-last com.im2win::Conv), joined by the values
one writes and another reads (as X, as the residual Z, as a Concat's input). Every value read from
outside a region is transposed to NHWC once;
every value a region writes that something outside reads (another node, a graph output) is
transposed back under its own name, so the rest of the graph, and every graph output, keeps its
NCHW shape and meaning; a value only GlobalAveragePools read is pooled channels-last instead, as a
MatMul (no Transpose). Regions of fewer than `min_convs` convs stay NCHW (two transposes would
cost more than the layout gains for one conv). W is stored as ONNX gives it in an NHWC node
(packed layouts are NCHW tiles): a packed initializer is unpacked, in place when only that node
reads it. Nothing written depends on the CPU: the kernels choose their tiles when they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .._library import DOMAIN
from .graph_rewrite import _subgraphs
from .weight_layout import (NHWC_LAYOUT, OIHW, WINOGRAD_LAYOUT_OF_TILE, WINOGRAD_LAYOUTS, nhwc_packable, pack_nhwc,
                            pack_winograd, unpack, unpack_winograd, winograd_packable)

TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


@dataclass
class LayoutReport:
    regions: list[list[str]] = field(default_factory=list)  # node names of each region made NHWC
    transposes: int = 0
    pools: int = 0  # ONNX pools moved into the regions (com.im2win::MaxPool / AveragePool)
    other_ops: int = 0  # element-wise ops, Concats and BatchNormalizations (as depthwise convs) inside
    kept_nchw: list[tuple[str, str]] = field(default_factory=list)  # (node, why)
    # GlobalAveragePools reading a region's output channels-last, as a MatMul (no Transpose)
    pools_as_matmul: int = 0
    winograd_weights: int = 0  # convs whose W is stored as Winograd's U (WINOGRAD_LAYOUTS)
    winograd_why: str = ""  # why the Winograd convs keep W, where they do

    def summary(self) -> str:
        nodes = sum(len(r) for r in self.regions)
        stored = f"; {self.winograd_weights} W stored as Winograd's U" if self.winograd_weights else ""
        return (f"channels-last: {len(self.regions)} region(s), {nodes - self.pools - self.other_ops} conv(s), "
                f"{self.pools} pool(s), {self.other_ops} other op(s), {self.transposes} transpose(s), "
                f"{self.pools_as_matmul} global pool(s) as MatMul; {len(self.kept_nchw)} conv(s) kept NCHW"
                f"{stored}{'; ' + self.winograd_why if self.winograd_why else ''}")


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


POOLS = ("MaxPool", "AveragePool")
# A value entering a region that only convs read, with at most this many channels (an image),
# reaches them channels-first: their panel rows gather it, with no Transpose and no copy of it.
MAX_NCHW_INPUT_CHANNELS = 4
# Element-wise ops of one activation input: the same in any layout (Clip's bounds are scalars).
UNARY = ("Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu", "Selu", "Softplus",
         "Identity")


def _onnx_op(node, *types) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type in types


def _is_conv(node) -> bool:
    return node.domain == DOMAIN and node.op_type == "Conv"


def _region_inputs(node) -> tuple[int, ...]:
    """The input slots that carry activations in a region: a conv's X and Z, every input of a
    Concat, the one data input of the other ops."""
    if _is_conv(node):
        return (0, 3)
    if _onnx_op(node, "Concat"):
        return tuple(range(len(node.input)))
    return (0,)


def _pool_candidate(node) -> str | None:
    """Why an ONNX pool cannot run channels-last (com.im2win::MaxPool / AveragePool), or None."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in POOLS:
        return "not a pool"
    if len([o for o in node.output if o]) != 1:
        return "MaxPool's Indices output is read"
    kernel = list(_attr(node, "kernel_shape", []) or [])
    if len(kernel) != 2:
        return "not a 2-D pool"
    if int(_attr(node, "storage_order", 0)) != 0:
        return "storage_order is set"
    dilated = any(d != 1 for d in (_attr(node, "dilations", []) or []))
    if dilated and (node.op_type == "AveragePool" or _text(_attr(node, "auto_pad", b"NOTSET")).startswith("SAME")):
        return "dilations the channels-last pool does not take"
    return None


def _batch_norm_candidate(node, initializers) -> str | None:
    """Why a BatchNormalization cannot become a channels-last depthwise 1x1 com.im2win::Conv."""
    if len([o for o in node.output if o]) != 1 or int(_attr(node, "training_mode", 0)) != 0:
        return "training-mode BatchNormalization"
    params = [initializers.get(name) for name in node.input[1:5]]
    if len(params) != 4 or any(t is None or len(t.dims) != 1 for t in params) or \
            len({int(t.dims[0]) for t in params}) != 1:
        return "BatchNormalization without constant per-channel parameters"
    return None


def _candidate(node, initializers) -> str | None:
    """Why `node` cannot run channels-last, or None when it can."""
    if node.op_type in POOLS:
        return _pool_candidate(node)
    if _onnx_op(node, *UNARY):
        return None if len([o for o in node.output if o]) == 1 else "more than one output"
    if _onnx_op(node, "Concat"):
        return None if int(_attr(node, "axis", 1)) in (1, -3) else "a Concat off the channel axis"
    if _onnx_op(node, "BatchNormalization"):
        return _batch_norm_candidate(node, initializers)
    if not _is_conv(node):
        return "not com.im2win::Conv"
    if _text(_attr(node, "layout", b"NCHW")) != "NCHW":
        return "already channels-last"
    w = _conv_w(node, initializers)
    if w is None or len(w.dims) != 4:
        return "W is not a 4-D initializer (2-D convs only)"
    return None


def to_channels_last(model: onnx.ModelProto, min_convs: int = 2, choose=None, shapes=None,
                     winograd_weights: str = "auto") -> LayoutReport:
    """Switches the regions of `model`'s main graph to NHWC, in place; returns what was done.

    choose(model, members, convs), when given, is asked about each region of min_convs or more
    convs (members: its node indices): None converts it, a string keeps it NCHW and says why
    (layout_choice.MeasuredChoice times it both ways). shapes: each value's dims (ints, None where
    not static), as inferred on the model before its convs became com.im2win's (ONNX cannot infer
    through them); by default what inference gives on `model` itself. winograd_weights: where
    the op will run Winograd, W stored as its U ("transformed"), as W ("original"), or "auto":
    transformed where that lowers the peak by the measure of _winograd_tiles."""
    if winograd_weights not in WINOGRAD_WEIGHTS:
        raise ValueError(f"winograd_weights must be one of {', '.join(WINOGRAD_WEIGHTS)}, got {winograd_weights!r}")
    graph = model.graph
    report = LayoutReport()
    initializers = {t.name: t for t in graph.initializer}
    readers: dict[str, list[tuple[int, int]]] = {}
    for i, node in enumerate(graph.node):
        for slot, name in enumerate(node.input):
            if name:
                readers.setdefault(name, []).append((i, slot))
    read_in_subgraphs = subgraph_reads(graph.node)  # the conversion leaves subgraphs as they are
    for name in read_in_subgraphs:  # subgraphs read outer values by name: outside readers
        readers.setdefault(name, []).append((-1, -1))
    candidates = {}
    for i, node in enumerate(graph.node):
        why = _candidate(node, initializers)
        if why is None:
            candidates[i] = node
        elif node.domain == DOMAIN and node.op_type == "Conv":
            report.kept_nchw.append((node.name, why))
    # Union-find over candidates joined by a value one writes and another reads as X or Z.
    parent = {i: i for i in candidates}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    producer = {out: i for i, node in candidates.items() for out in node.output[:1]}
    for i, node in candidates.items():
        for slot in _region_inputs(node):
            if slot < len(node.input) and node.input[slot] in producer:
                a, b = find(i), find(producer[node.input[slot]])
                if a != b:
                    parent[a] = b
    regions: dict[int, list[int]] = {}
    for i in candidates:
        regions.setdefault(find(i), []).append(i)
    graph_outputs = {o.name for o in graph.output}
    converted: set[int] = set()
    for members in regions.values():
        convs = sum(1 for i in members if _is_conv(graph.node[i]))
        why = f"a region of {convs} conv(s)" if convs < min_convs else \
            choose(model, sorted(members), convs) if choose is not None else None
        if why is not None:
            for i in members:
                if _is_conv(graph.node[i]):
                    report.kept_nchw.append((graph.node[i].name, why))
            continue
        converted.update(members)
        report.regions.append([graph.node[i].name for i in sorted(members)])
    if not converted:
        return report
    if shapes is None:
        shapes = inferred_dims(model)  # (before anything is renamed)

    new_nodes: dict[int, list[onnx.NodeProto]] = {}  # inserted before node i (or after, for exits)
    after: dict[int, list[onnx.NodeProto]] = {}
    entered: dict[str, str] = {}
    used_names = {n for node in graph.node for n in list(node.input) + list(node.output)}
    used_names |= {v.name for v in list(graph.input) + list(graph.output)} | set(initializers)

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in used_names:
            name, k = f"{base}_{k}", k + 1
        used_names.add(name)
        return name

    inside_outputs = {graph.node[i].output[0]: i for i in converted}
    bn_params: set[str] = set()
    bn_convs: set[int] = set()  # the BatchNormalizations made depthwise convs (id of the node)
    report.pools = sum(1 for i in converted if graph.node[i].op_type in POOLS)
    report.other_ops = sum(1 for i in converted if not _is_conv(graph.node[i]) and graph.node[i].op_type not in POOLS)
    first_reader = {}
    for i in sorted(converted):
        node = graph.node[i]
        for slot in _region_inputs(node):
            if slot >= len(node.input) or not node.input[slot]:
                continue
            value = node.input[slot]
            if value in inside_outputs:
                continue
            if value not in entered:  # enters the region: transposed once, before its first reader
                entered[value] = fresh(f"{value}_nhwc")
                first_reader[value] = i
                new_nodes.setdefault(i, []).append(helper.make_node(
                    "Transpose", [value], [entered[value]], name=fresh(f"{value}_to_nhwc"), perm=TO_NHWC))
                report.transposes += 1
            node.input[slot] = entered[value]
    _read_channels_first(graph, converted, entered, first_reader, new_nodes, initializers, report)
    tiles = _winograd_tiles(graph, converted, shapes, initializers, winograd_weights, report)

    def inside(reader, slot):
        return reader in converted and slot in _region_inputs(graph.node[reader])

    for value, i in inside_outputs.items():
        node = graph.node[i]
        outside = [r for r in readers.get(value, []) if not inside(*r)]
        nhwc_name = fresh(f"{value}_nhwc")
        node.output[0] = nhwc_name
        for reader, slot in readers.get(value, []):
            if inside(reader, slot):
                graph.node[reader].input[slot] = nhwc_name
        if outside and value not in graph_outputs and _pooled_by_matmul(graph, value, nhwc_name, outside, shapes,
                                                                         new_nodes, fresh):
            report.pools_as_matmul += len(outside)
        elif outside or value in graph_outputs:  # leaves the region under its own name, NCHW again
            after.setdefault(i, []).append(helper.make_node(
                "Transpose", [nhwc_name], [value], name=fresh(f"{value}_to_nchw"), perm=TO_NCHW))
            report.transposes += 1
        if _is_conv(node):
            node.attribute.append(helper.make_attribute("layout", "NHWC"))
            _store_nhwc_weights(graph, node, initializers, readers, fresh, graph_outputs | read_in_subgraphs,
                                tiles.get(i, 0))
        elif _onnx_op(node, *UNARY):
            pass  # the same op on the same values, in another order
        elif _onnx_op(node, "Concat"):
            _set_attr(node, "axis", 3)
        elif _onnx_op(node, "BatchNormalization"):
            bn_params.update(node.input[1:5])
            _batch_norm_to_conv(graph, node, initializers, fresh)
            bn_convs.add(id(node))
        else:  # ONNX's pool -> com.im2win's channels-last one, the same attributes
            node.domain = DOMAIN
            kept = [a for a in node.attribute if a.name != "storage_order"]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.append(helper.make_attribute("layout", "NHWC"))
            del node.output[1:]
    # BatchNormalization parameters that only the converted nodes read are gone with them.
    read = {name for node in graph.node for name in node.input} | read_in_subgraphs
    unused = [t for t in graph.initializer if t.name not in read and t.name in bn_params]
    for t in unused:
        graph.initializer.remove(t)
    # The region's values changed shape: their recorded shapes no longer hold.
    stale = set(inside_outputs)
    kept_info = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    ordered = []
    for i, node in enumerate(graph.node):
        ordered.extend(new_nodes.get(i, []))
        ordered.append(node)
        ordered.extend(after.get(i, []))
    del graph.node[:]
    graph.node.extend(_fuse_relu_after(ordered, bn_convs, graph_outputs | read_in_subgraphs))
    return report


def inferred_dims(model: onnx.ModelProto) -> dict[str, list]:
    """Each value's dims as shape inference gives them on `model`; {} where inference fails."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # (a model ONNX cannot infer keeps its Transposes)
        return {}
    return static_dims({v.name: v.type for v in
                        list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)})


def static_dims(types: dict) -> dict[str, list]:
    """{name: dims} of the tensor types in `types` ({name: TypeProto}), None for a dim not static."""
    shapes = {}
    for name, t in types.items():
        if t.HasField("tensor_type") and t.tensor_type.HasField("shape"):
            shapes[name] = [d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim]
    return shapes


def _pooled_by_matmul(graph, value, nhwc_name, readers, shapes, new_nodes, fresh) -> bool:
    """Where only GlobalAveragePools read a region's output `value` (N x C x H x W, C, H and W
    static), each reads it channels-last instead, with no Transpose: the mean of the H x W positions
    as a MatMul of a row of 1 / (H x W) by the N x HW x C value, reshaped to N x C x 1 x 1.
    Returns whether it did."""
    dims = shapes.get(value)
    if dims is None or len(dims) != 4 or any(d is None or d < 1 for d in dims[1:]):
        return False
    if any(r < 0 or slot != 0 or not _onnx_op(graph.node[r], "GlobalAveragePool") for r, slot in readers):
        return False
    _, c, h, w = dims
    mean = fresh(f"{value}_mean_row")
    graph.initializer.append(numpy_helper.from_array(np.full((1, h * w), 1.0 / (h * w), np.float32), mean))
    flat_shape, pooled_shape = fresh(f"{value}_positions_shape"), fresh(f"{value}_pooled_shape")
    graph.initializer.append(numpy_helper.from_array(np.array([0, h * w, c], np.int64), flat_shape))
    graph.initializer.append(numpy_helper.from_array(np.array([0, c, 1, 1], np.int64), pooled_shape))
    for r, _ in readers:
        pool = graph.node[r]
        flat, summed = fresh(f"{value}_positions"), fresh(f"{pool.output[0]}_mean")
        new_nodes.setdefault(r, []).extend([
            helper.make_node("Reshape", [nhwc_name, flat_shape], [flat], name=fresh(f"{pool.name}_positions")),
            helper.make_node("MatMul", [mean, flat], [summed], name=fresh(f"{pool.name}_mean"))])
        pool.op_type, pool.domain = "Reshape", ""
        del pool.input[:]
        pool.input.extend([summed, pooled_shape])
    return True


def _read_channels_first(graph, converted, entered, first_reader, new_nodes, initializers, report) -> None:
    """Drops the Transpose into the region of each value that only convs of at most
    MAX_NCHW_INPUT_CHANNELS input channels read as X: they take it channels-first
    (input_layout="NCHW"), gathering their panel rows from its planes (a network's image input)."""
    for value, nhwc_name in entered.items():
        reads = [(i, slot) for i in sorted(converted) for slot, name in enumerate(graph.node[i].input)
                 if name == nhwc_name]
        if not reads or any(slot != 0 or not _is_conv(graph.node[i]) for i, slot in reads):
            continue
        channels = [_input_channels(graph.node[i], initializers) for i, _ in reads]
        if any(c is None or c > MAX_NCHW_INPUT_CHANNELS for c in channels):
            continue
        inserted = new_nodes[first_reader[value]]
        inserted[:] = [n for n in inserted if list(n.output) != [nhwc_name]]
        for i, _ in reads:
            graph.node[i].input[0] = value
            graph.node[i].attribute.append(helper.make_attribute("input_layout", "NCHW"))
        report.transposes -= 1


def _conv_w(node, initializers):
    """A conv's W initializer, or None where W is fed."""
    return initializers.get(node.input[1]) if len(node.input) > 1 else None


def _input_channels(node, initializers) -> int | None:
    """C of a conv's X from its W initializer (C/group x group), or None where W is not one."""
    w = _conv_w(node, initializers)
    if w is None or len(w.dims) < 2:
        return None
    return int(w.dims[1]) * int(_attr(node, "group", 1) or 1)


def subgraph_reads(nodes) -> set[str]:
    """The names the subgraphs of `nodes` (If, Loop, Scan bodies) read: outer values they use."""
    return {name for node in nodes for a in node.attribute for sub in _subgraphs(a)
            for n in sub.node for name in n.input}


def _fuse_relu_after(nodes: list, convs: set, kept: set) -> list:
    """The nodes with each Relu that alone reads one of `convs`' outputs folded into that conv
    (activation="Relu"); `kept`: values that must stay (graph outputs, values subgraphs read)."""
    readers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    dropped = set()
    for node in nodes:
        if id(node) not in convs or node.output[0] in kept:
            continue
        after = readers.get(node.output[0], [])
        if len(after) == 1 and _onnx_op(after[0], "Relu"):
            node.attribute.append(helper.make_attribute("activation", "Relu"))
            node.output[0] = after[0].output[0]
            dropped.add(id(after[0]))
    return [node for node in nodes if id(node) not in dropped]


def _set_attr(node, name, value) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(helper.make_attribute(name, value))


def _batch_norm_to_conv(graph, node, initializers, fresh) -> None:
    """Inference BatchNormalization, y = (x - mean) * scale / sqrt(var + epsilon) + B, as the depthwise
    1x1 channels-last com.im2win::Conv with W = scale / sqrt(var + epsilon), bias B - mean * W."""
    import numpy as np

    scale, b, mean, var = (numpy_helper.to_array(initializers[name]).astype(np.float64) for name in node.input[1:5])
    epsilon = float(_attr(node, "epsilon", 1e-5))
    w = scale / np.sqrt(var + epsilon)
    channels = w.shape[0]
    w_name, b_name = fresh(f"{node.name or node.output[0]}_dw_W"), fresh(f"{node.name or node.output[0]}_dw_B")
    graph.initializer.extend([numpy_helper.from_array(w.astype(np.float32).reshape(channels, 1, 1, 1), w_name),
                              numpy_helper.from_array((b - mean * w).astype(np.float32), b_name)])
    replacement = helper.make_node("Conv", [node.input[0], w_name, b_name], list(node.output), name=node.name,
                                   domain=DOMAIN, group=channels, kernel_shape=[1, 1], layout="NHWC")
    node.CopyFrom(replacement)


# The op's choice under algorithm "auto" (ops/conv/winograd_nhwc.cc): Winograd from 32 input and
# output channels, F(4x4, 3x3) where both output sides are at least 16, else F(2x2, 3x3).
WINOGRAD_MIN_CHANNELS = 32
WINOGRAD_MIN_MAP_FOR_TILE4 = 16


def _winograd_tile(node, y_dims, initializers) -> int:
    """The tile the op runs this NHWC conv with under algorithm "auto" (2 or 4), where its
    constant W can be stored as U: 2-D 3x3, strides and dilations 1, one group, X channels-last,
    C and M of at least 32, M a multiple of 16, and Y's height and width known (y_dims, NCHW, from
    shape inference on the model as given); else 0."""
    w_name = node.input[1] if len(node.input) > 1 else ""
    if w_name not in initializers or _text(_attr(node, "algorithm", b"auto")) != "auto":
        return 0
    if _text(_attr(node, "input_layout", b"")) == "NCHW" or int(_attr(node, "group", 1)) != 1:
        return 0
    if any(int(v) != 1 for v in list(_attr(node, "strides", [])) + list(_attr(node, "dilations", []))):
        return 0
    w_dims = [int(d) for d in initializers[w_name].dims]
    if not winograd_packable(w_dims, 1) or min(w_dims[:2]) < WINOGRAD_MIN_CHANNELS:
        return 0
    if not y_dims or len(y_dims) != 4 or not all(isinstance(d, int) and d > 0 for d in y_dims[2:]):
        return 0
    return 4 if min(y_dims[2:]) >= WINOGRAD_MIN_MAP_FOR_TILE4 else 2


WINOGRAD_WEIGHTS = ("auto", "transformed", "original")


def _winograd_tiles(graph, converted, shapes, initializers, mode: str, report) -> dict[int, int]:
    """The region convs whose W to store as Winograd's U, with the tile: {node index: 2 or 4}.

    The session then holds U alone where it held W and the U the op made: the W less at run time.
    But U is 16/9 (F(2x2, 3x3)) or 4x (F(4x4, 3x3)) W, and ORT's peak while it loads a model is
    about the file plus its largest tensor (VGG-16: 977 MiB for a 528 MiB file whose largest
    tensor is 392 MiB; with U stored, 1086 for 636). "auto" stores U where that lowers the larger
    of the two peaks with no activations counted (batch 1's case; activations only add to the run's
    peak): the file's growth plus the largest tensor after, below the larger of the largest tensor
    and all U before. Measured at batch 1 (Zen 3, peak RSS of a session's load and two runs): ResNet-50
    209 MiB against 240 and DenseNet-121 135 against 148 (stored), VGG-16 977 against 1086 (kept)."""
    if mode == "original":
        return {}
    tiles = {}
    for i in sorted(converted):
        node = graph.node[i]
        if _is_conv(node) and (tile := _winograd_tile(node, shapes.get(node.output[0]), initializers)):
            tiles[i] = tile
    if mode == "auto" and tiles:
        largest = max((int(np.prod(t.dims)) for t in graph.initializer), default=0)
        all_u = grown = largest_u = 0
        for i, tile in tiles.items():
            w = int(np.prod(initializers[graph.node[i].input[1]].dims))
            u = w * (tile + 2) ** 2 // 9
            all_u, grown, largest_u = all_u + u, grown + u - w, max(largest_u, u)
        if grown + max(largest, largest_u) >= max(largest, all_u):
            report.winograd_why = (f"Winograd's W kept as W: U would grow the file by {4 * grown / 2**20:.0f} MiB and "
                                   f"loading would peak higher than the runs")
            return {}
    report.winograd_weights = len(tiles)
    return tiles


def _plain_weights(w, layout: str, group: int):
    """W (OIHW) from any order the op reads it in."""
    if layout in WINOGRAD_LAYOUTS:
        return unpack_winograd(w, layout).astype(w.dtype)
    return unpack(w, layout, group)


def _store_nhwc_weights(graph, node, initializers, readers, fresh, keep_as_is, winograd_tile: int = 0) -> None:
    """A constant W of an NHWC node in the order its kernels read: where the op runs Winograd
    (winograd_tile, from _winograd_tile), as its U for that tile (WINOGRAD_LAYOUTS), so the session
    holds U alone instead of W and U; else in NHWC_LAYOUT where that order is a permutation of W,
    so the session holds one copy of it; else as ONNX gives it (OIHW), an NCHW-packed one
    unpacked. W that another node or a subgraph also reads (or `keep_as_is` names) gets a copy of
    its own."""
    w_name = node.input[1] if len(node.input) > 1 else ""
    if w_name not in initializers:
        return  # computed at run time: read as OIHW, packed per run
    layout = _text(_attr(node, "weight_layout", OIHW.encode()))
    group = int(_attr(node, "group", 1))
    w = numpy_helper.to_array(initializers[w_name])
    if layout in WINOGRAD_LAYOUTS and WINOGRAD_LAYOUTS[layout] == winograd_tile:
        return  # stored so already (no need to unpack U to find that out)
    plain = _plain_weights(w, layout, group)
    wanted = WINOGRAD_LAYOUT_OF_TILE[winograd_tile] if winograd_tile else \
        NHWC_LAYOUT if nhwc_packable(plain.shape, group) else OIHW
    if wanted != OIHW:
        _set_attr(node, "weight_layout", wanted)
    elif layout != OIHW:
        kept = [a for a in node.attribute if a.name != "weight_layout"]
        del node.attribute[:]
        node.attribute.extend(kept)
    if wanted == layout:
        return
    stored = pack_winograd(plain, winograd_tile) if winograd_tile else pack_nhwc(plain, group) \
        if wanted == NHWC_LAYOUT else plain
    if len(readers.get(w_name, [])) == 1 and w_name not in keep_as_is:
        initializers[w_name].CopyFrom(numpy_helper.from_array(stored, w_name))
    else:
        suffix = f"winograd{winograd_tile}" if winograd_tile else "nhwc" if wanted == NHWC_LAYOUT else "oihw"
        name = fresh(f"{w_name}_{suffix}")
        graph.initializer.append(numpy_helper.from_array(stored, name))
        initializers[name] = graph.initializer[-1]
        node.input[1] = name
