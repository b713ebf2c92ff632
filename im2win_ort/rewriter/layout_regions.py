"""Channels-last regions: connected com.im2win::Conv nodes of a rewritten model switched to
layout="NHWC", with a Transpose only where a value enters or leaves a region.

A region is a set of 2-D com.im2win::Conv nodes, and of the ONNX MaxPool and AveragePool nodes
between them (which become com.im2win's channels-last pools), joined by the values one writes and
another reads (as X or as the residual Z). Every value read from outside a region is transposed to NHWC once;
every value a region writes that something outside reads (another node, a graph output) is
transposed back under its own name, so the rest of the graph, and every graph output, keeps its
NCHW shape and meaning. Regions of fewer than `min_convs` convs stay NCHW (two transposes would
cost more than the layout gains for one conv). W is stored as ONNX gives it in an NHWC node
(packed layouts are NCHW tiles): a packed initializer is unpacked, in place when only that node
reads it. Nothing written depends on the CPU: the kernels choose their tiles when they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import helper, numpy_helper

from .._library import DOMAIN
from .weight_layout import OIHW, unpack

TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


@dataclass
class LayoutReport:
    regions: list[list[str]] = field(default_factory=list)  # node names of each region made NHWC
    transposes: int = 0
    pools: int = 0  # ONNX pools moved into the regions (com.im2win::MaxPool / AveragePool)
    kept_nchw: list[tuple[str, str]] = field(default_factory=list)  # (node, why)

    def summary(self) -> str:
        nodes = sum(len(r) for r in self.regions)
        return (f"channels-last: {len(self.regions)} region(s), {nodes - self.pools} conv(s), {self.pools} pool(s), "
                f"{self.transposes} transpose(s); {len(self.kept_nchw)} conv(s) kept NCHW")


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


POOLS = ("MaxPool", "AveragePool")


def _is_conv(node) -> bool:
    return node.domain == DOMAIN and node.op_type == "Conv"


def _region_inputs(node) -> tuple[int, ...]:
    """The input slots that carry activations in a region: a conv's X and Z, a pool's X."""
    return (0, 3) if _is_conv(node) else (0,)


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


def _candidate(node, initializers) -> str | None:
    """Why `node` cannot run channels-last, or None when it can."""
    if node.op_type in POOLS:
        return _pool_candidate(node)
    if not _is_conv(node):
        return "not com.im2win::Conv"
    if _text(_attr(node, "layout", b"NCHW")) != "NCHW":
        return "already channels-last"
    w = initializers.get(node.input[1]) if len(node.input) > 1 else None
    if w is None or len(w.dims) != 4:
        return "W is not a 4-D initializer (2-D convs only)"
    return None


def to_channels_last(model: onnx.ModelProto, min_convs: int = 2, choose=None) -> LayoutReport:
    """Switches the regions of `model`'s main graph to NHWC, in place; returns what was done.

    choose(model, members, convs), when given, is asked about each region of min_convs or more
    convs (members: its node indices): None converts it, a string keeps it NCHW and says why
    (layout_choice.MeasuredChoice times it both ways)."""
    graph = model.graph
    report = LayoutReport()
    initializers = {t.name: t for t in graph.initializer}
    readers: dict[str, list[tuple[int, int]]] = {}
    for i, node in enumerate(graph.node):
        for slot, name in enumerate(node.input):
            if name:
                readers.setdefault(name, []).append((i, slot))
    for node in graph.node:  # subgraphs read outer values by name: count them as outside readers
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                for n in sub.node:
                    for name in n.input:
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
    report.pools = sum(1 for i in converted if not _is_conv(graph.node[i]))
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
        if outside or value in graph_outputs:  # leaves the region under its own name, NCHW again
            after.setdefault(i, []).append(helper.make_node(
                "Transpose", [nhwc_name], [value], name=fresh(f"{value}_to_nchw"), perm=TO_NCHW))
            report.transposes += 1
        if _is_conv(node):
            node.attribute.append(helper.make_attribute("layout", "NHWC"))
            _store_plain_weights(graph, node, initializers, readers)
        else:  # ONNX's pool -> com.im2win's channels-last one, the same attributes
            node.domain = DOMAIN
            kept = [a for a in node.attribute if a.name != "storage_order"]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.append(helper.make_attribute("layout", "NHWC"))
            del node.output[1:]
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
    graph.node.extend(ordered)
    return report


def _store_plain_weights(graph, node, initializers, readers) -> None:
    """W as ONNX gives it (OIHW) for an NHWC node; a packed one unpacked."""
    layout = _text(_attr(node, "weight_layout", OIHW.encode()))
    if layout == OIHW:
        return
    w_name = node.input[1]
    group = int(_attr(node, "group", 1))
    plain = unpack(numpy_helper.to_array(initializers[w_name]), layout, group)
    if len(readers.get(w_name, [])) == 1:
        initializers[w_name].CopyFrom(numpy_helper.from_array(plain, w_name))
    else:  # shared with another node that still reads it packed: a plain copy of its own
        name = f"{w_name}_oihw"
        graph.initializer.append(numpy_helper.from_array(plain, name))
        initializers[name] = graph.initializer[-1]
        node.input[1] = name
    kept = [a for a in node.attribute if a.name != "weight_layout"]
    del node.attribute[:]
    node.attribute.extend(kept)
