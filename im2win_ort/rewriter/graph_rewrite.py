"""Rewrites an ONNX model's Conv nodes to com.im2win::Conv.

ORT's graph optimizer does not touch custom-domain nodes, so the rewriter does what it would have
done around a Conv: weights computed by constant subgraphs are folded to initializers, a following
BatchNormalization, Mul or Add by constants is folded into W and B, a residual Add becomes the
op's Z input and a following activation becomes its fused activation. A fusion happens only when
the value between the two nodes has no other consumer and is not a graph output. Everything else in
the model is kept as it was; nodes the op cannot run are left to ORT, with the reason in the report.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from .._ir_version import make_model
from .._library import DOMAIN
from .weight_layout import FAMILY_LAYOUTS, pack

CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
# Single-input activations the op fuses, with their ONNX attribute defaults in activation_params order.
ACTIVATIONS = {"Relu": (), "Sigmoid": (), "Tanh": (), "HardSwish": (), "LeakyRelu": (("alpha", 0.01),),
               "HardSigmoid": (("alpha", 0.2), ("beta", 0.5))}
FLOAT_MAX = float(np.finfo(np.float32).max)
# Ops whose output is not a function of their inputs: never folded.
NONDETERMINISTIC = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                    "Bernoulli", "Dropout"}


class RewriteError(Exception):
    """The model cannot be rewritten; the message says why."""


@dataclass
class RewriteReport:
    replaced: list[str] = field(default_factory=list)  # nodes now on com.im2win::Conv
    fused: list[str] = field(default_factory=list)  # what was fused into which node
    folded: list[str] = field(default_factory=list)  # constant subgraphs folded to initializers
    left: list[tuple[str, str]] = field(default_factory=list)  # (node, why it stays on ORT)
    channels_last: str = ""  # what layout="nhwc" or "auto" did (LayoutReport.summary, region timings)

    def to_dict(self) -> dict:
        return {"replaced": self.replaced, "fused": self.fused, "folded": self.folded,
                "left": [{"node": n, "reason": r} for n, r in self.left]}

    def summary(self) -> str:
        lines = [f"replaced {len(self.replaced)} Conv node(s) with {DOMAIN}::Conv",
                 f"fused {len(self.fused)}: " + ("; ".join(self.fused) if self.fused else "-"),
                 f"folded {len(self.folded)} constant value(s): " + (", ".join(self.folded) if self.folded else "-")]
        lines.append(f"left {len(self.left)} node(s) to ORT" + (":" if self.left else ""))
        lines += [f"  {name}: {reason}" for name, reason in self.left]
        if self.channels_last:
            lines.append(self.channels_last)
        return "\n".join(lines)


@dataclass
class Policy:
    skip_pointwise: bool = False  # keep 1x1 convs on ORT
    skip_depthwise: bool = False  # keep depthwise convs (group == C == M/multiplier) on ORT
    prepack: bool = True  # store constant weights in the op's packed layout (one copy in the session)
    plan: str = "measure"  # how the packed layout's tile family is chosen: "measure" or "heuristic"


def rewrite(model, **options) -> onnx.ModelProto:
    """The rewritten model (a new ModelProto; the argument is not modified). See rewrite_with_report."""
    return rewrite_with_report(model, **options)[0]


REWRITE_PLANS = ("measure", "heuristic")


REWRITE_LAYOUTS = ("nchw", "nhwc", "auto")


# The op's `algorithm` for the rewritten convs: "auto" leaves it to the op (Winograd for
# channels-last 3x3 convs of stride 1), "direct" sets it on every one (no transformed copy of W).
REWRITE_ALGORITHMS = ("auto", "direct")


def rewrite_with_report(model, skip_pointwise: bool = False, skip_depthwise: bool = False, prepack: bool = True,
                        plan: str = "measure", layout: str = "nchw", threads: int = 1, algorithm: str = "auto",
                        winograd_weights: str = "auto"):
    """Rewrites a model given as a path, bytes or onnx.ModelProto; returns (ModelProto, RewriteReport).

    prepack: store each constant W in the packed order the op's kernels read for the input size
    shape inference gives (weight_layout), so that the session keeps ORT's copy only. A session
    runs prepacked weights in the tile family they were packed for, so that is chosen here:
    plan="measure" times the layer's tile families on this CPU (one thread,
    _kernels.measure_plan), as a session does for weights it packs itself; "heuristic" takes the
    planner's rules, the same output on every run of a CPU class.

    layout="nhwc" then runs each region of two or more connected convs channels-last, with a
    Transpose only where a value enters or leaves it (layout_regions.py); "nchw" (the default)
    keeps ONNX's layout; "auto" times each region both ways on this CPU at `threads` intra-op
    threads and makes it channels-last only where that is faster (layout_choice.py). With
    plan="heuristic", auto keeps NCHW: no CPU measured runs whole networks clearly faster
    channels-last at one thread (docs/performance.md), and heuristic output never depends on timing.

    algorithm="direct" sets the op's `algorithm` to "direct" on every rewritten conv: no Winograd,
    whose transformed weights U take 16/9 to 4x a 3x3 conv's W; "auto" (the default) leaves the
    choice to the op. Where the op will run Winograd (channels-last, output size known to shape
    inference), winograd_weights says how W is stored: "transformed", as U (weight_layout
    im2win.winograd2 or 4), so that the session holds U alone instead of W and U; "original", as
    W; "auto" (the default), as U where loading the larger file does not peak above the runs
    (layout_regions._winograd_tiles).
    """
    from .layout_regions import WINOGRAD_WEIGHTS, static_dims, to_channels_last
    from .model_io import load_model

    if plan not in REWRITE_PLANS:
        raise ValueError(f"plan must be one of {', '.join(REWRITE_PLANS)}, got {plan!r}")
    if layout not in REWRITE_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(REWRITE_LAYOUTS)}, got {layout!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024:
        raise ValueError(f"threads must be an integer from 1 to 1024, got {threads!r}")
    if algorithm not in REWRITE_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(REWRITE_ALGORITHMS)}, got {algorithm!r}")
    if winograd_weights not in WINOGRAD_WEIGHTS:
        raise ValueError(f"winograd_weights must be one of {', '.join(WINOGRAD_WEIGHTS)}, got {winograd_weights!r}")
    original = load_model(model)
    out = copy.deepcopy(original)
    report = RewriteReport()
    types = _value_types(out)
    opsets = {o.domain or "": o.version for o in out.opset_import}
    _GraphRewriter(out.graph, types, opsets, Policy(skip_pointwise, skip_depthwise, prepack, plan), report, {}).run()
    if report.replaced and not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    if algorithm == "direct":
        winograd_weights = "original"  # (no Winograd, so no U to store)
    if layout == "nhwc":
        report.channels_last = to_channels_last(out, shapes=static_dims(types),
                                                winograd_weights=winograd_weights).summary()
    elif layout == "auto" and plan == "measure":
        from .layout_choice import MeasuredChoice

        choice = MeasuredChoice(types, threads)
        report.channels_last = "\n".join([to_channels_last(out, choose=choice, shapes=static_dims(types),
                                                            winograd_weights=winograd_weights).summary(),
                                           *choice.describe()])
    elif layout == "auto":
        report.channels_last = "channels-last: none (layout auto with plan heuristic keeps NCHW)"
    if algorithm != "auto":
        _set_algorithm(out.graph, algorithm)
    return out, report


def _set_algorithm(graph, algorithm: str) -> None:
    """The op's `algorithm` attribute on every com.im2win::Conv of graph and its subgraphs."""
    from .layout_regions import _set_attr

    for node in graph.node:
        if node.domain == DOMAIN and node.op_type == "Conv":
            _set_attr(node, "algorithm", algorithm)
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                _set_algorithm(sub, algorithm)


def _value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types and shapes ONNX shape inference knows, for every value of every graph it reaches."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # too large for protobuf, or inference failed: use what the model states
        inferred = model
    types: dict[str, onnx.TypeProto] = {}

    def collect(graph):
        for v in list(graph.input) + list(graph.output) + list(graph.value_info):
            types.setdefault(v.name, v.type)
        for t in graph.initializer:
            types.setdefault(t.name, helper.make_tensor_type_proto(t.data_type, list(t.dims)))
        for node in graph.node:
            for attr in node.attribute:
                for sub in _subgraphs(attr):
                    collect(sub)

    collect(inferred.graph)
    return types


_ATTRIBUTE_TYPES = {"auto_pad": AttributeProto.STRING, "dilations": AttributeProto.INTS,
                    "group": AttributeProto.INT, "kernel_shape": AttributeProto.INTS,
                    "pads": AttributeProto.INTS, "strides": AttributeProto.INTS,
                    "activation": AttributeProto.STRING, "activation_params": AttributeProto.FLOATS}


def _invalid_attributes(node, w_shape) -> str | None:
    """What makes ONNX Conv's attribute rules refuse `node` (ORT refuses the model), or None.
    Geometry that needs X's size is left to the op, which checks it when the model loads."""
    attrs = {}
    for a in node.attribute:
        expected = _ATTRIBUTE_TYPES.get(a.name)
        if expected is not None and a.type != expected:
            return (f"attribute '{a.name}' is {AttributeProto.AttributeType.Name(a.type)}, "
                    f"ONNX Conv takes {AttributeProto.AttributeType.Name(expected)}")
        attrs[a.name] = helper.get_attribute_value(a)
    auto_pad = attrs.get("auto_pad", b"NOTSET").decode(errors="replace") or "NOTSET"  # "" is NOTSET in ORT
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        return f"auto_pad '{auto_pad}' is not NOTSET, VALID, SAME_UPPER or SAME_LOWER"
    if auto_pad != "NOTSET" and attrs.get("pads"):
        return f"pads are given together with auto_pad={auto_pad}"
    if auto_pad.startswith("SAME") and any(d != 1 for d in attrs.get("dilations", [])):
        return f"ORT's CPU Conv has no dilations with auto_pad={auto_pad}"
    group = attrs.get("group", 1)
    if group < 1:
        return f"group {group} is not >= 1"
    for key, least in (("strides", 1), ("dilations", 1), ("kernel_shape", 1), ("pads", 0)):
        if any(v < least for v in attrs.get(key, [])):
            return f"{key} {list(attrs[key])} are not all >= {least}"
    if w_shape is None or any(d is None for d in w_shape):
        return None
    if len(w_shape) < 3:
        return f"W's shape {list(w_shape)} is not M x C/group x kernel"
    rank = len(w_shape) - 2
    for key, length in (("strides", rank), ("dilations", rank), ("kernel_shape", rank), ("pads", 2 * rank)):
        if key in attrs and len(attrs[key]) != length:
            return f"{key} {list(attrs[key])} has {len(attrs[key])} values, W {w_shape} needs {length}"
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != list(w_shape[2:]):
        return f"kernel_shape {list(attrs['kernel_shape'])} does not match W's shape {w_shape}"
    if w_shape[0] % group:
        return f"group {group} does not divide W's {w_shape[0]} output channels"
    return None


def _subgraphs(attr: AttributeProto):
    if attr.type == AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def _shape(type_proto) -> list | None:
    """Static dims (None for symbolic ones), or None if the rank is unknown."""
    if type_proto is None or not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in type_proto.tensor_type.shape.dim]


class _GraphRewriter:
    """Rewrites one graph in place (and its subgraphs, each with its own rewriter).

    Producers and readers of every value are indexed once and kept current by the methods that
    change the graph (_set_inputs, _set_output, _remove, _add_initializer), so each query is a
    lookup: a pass over the whole graph per Conv made the rewrite quadratic in the model's size.
    Removed nodes stay in self.nodes, marked in self.removed, until the final sort writes the list."""

    def __init__(self, graph, types, opsets, policy, report, outer_constants):
        self.graph, self.types, self.opsets, self.policy, self.report = graph, types, opsets, policy, report
        self.outer_constants = outer_constants  # name -> TensorProto visible from enclosing graphs
        self.names = {n.name for n in graph.node} | {o for n in graph.node for o in n.output}
        self.names |= {t.name for t in graph.initializer} | {i.name for i in graph.input}
        self.inits = {t.name: t for t in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input}
        self.outputs = {o.name for o in graph.output}
        self.nodes: list = []
        self.removed: set[int] = set()  # id() of nodes taken out of the graph
        self.producers: dict[str, object] = {}
        self.readers: dict[str, dict[int, list]] = defaultdict(dict)  # value -> {id(node): [node, times read]}
        self.reads: dict[int, list[str]] = {}  # id(node) -> the names it reads, inputs and subgraphs'

    # --- the index ----------------------------------------------------------------------------

    def build_index(self):
        self.nodes = list(self.graph.node)
        for node in self.nodes:
            self._index(node)

    def _index(self, node):
        reads = [i for i in node.input if i]
        for attr in node.attribute:  # subgraphs may read outer values by name
            for sub in _subgraphs(attr):
                reads += _names_read(sub)
        self.reads[id(node)] = reads
        for value in reads:
            entry = self.readers[value].setdefault(id(node), [node, 0])
            entry[1] += 1
        for o in node.output:
            if o:
                self.producers.setdefault(o, node)  # produced twice (ORT refuses that): the first one

    def _unindex(self, node):
        for value in self.reads.pop(id(node), []):
            entry = self.readers[value].get(id(node))
            if entry is not None:
                entry[1] -= 1
                if not entry[1]:
                    del self.readers[value][id(node)]
        for o in node.output:
            if o and self.producers.get(o) is node:
                del self.producers[o]

    def _set_inputs(self, node, inputs):
        self._unindex(node)
        del node.input[:]
        node.input.extend(inputs)
        self._index(node)

    def _set_output(self, node, index, name):
        self._unindex(node)
        node.output[index] = name
        self._index(node)

    def _remove(self, node):
        self._unindex(node)
        self.removed.add(id(node))

    def _add_initializer(self, tensor):
        self.graph.initializer.append(tensor)
        self.inits[tensor.name] = self.graph.initializer[-1]

    def _pop_initializer(self, previous):
        """Takes back the last initializer added; `previous` is what its name named before, or None."""
        tensor = self.graph.initializer.pop()
        if previous is not None:
            self.inits[tensor.name] = previous
        else:
            self.inits.pop(tensor.name, None)

    def live_nodes(self) -> list:
        return [n for n in self.nodes if id(n) not in self.removed]

    # --- constants -----------------------------------------------------------------------------

    def constant(self, name: str) -> np.ndarray | None:
        """The value if it is a constant (initializer, Constant node or foldable subgraph), else None."""
        if not name:
            return None
        if name in self.inits and name not in self.graph_inputs:  # an initializer that is also an input can be fed
            return _array(self.inits[name])
        if name in self.outer_constants:
            return _array(self.outer_constants[name])
        if self.fold(name):
            return _array(self.inits[name])
        return None

    def producer(self, name: str):
        return self.producers.get(name)

    def fold(self, name: str) -> bool:
        """Evaluates the constant subgraph that produces `name` into an initializer of that name."""
        nodes, seen, needed, frontier = [], set(), set(), [name]
        while frontier:
            value = frontier.pop()
            if value in needed or (value in self.inits and value not in self.graph_inputs) or \
                    value in self.outer_constants:
                continue
            node = self.producer(value)
            if node is None or node.op_type in NONDETERMINISTIC or any(_subgraphs(a) for a in node.attribute):
                return False
            needed.add(value)
            if id(node) not in seen:
                seen.add(id(node))
                nodes.append(node)
            frontier += [i for i in node.input if i]
            if len(nodes) > 64:
                return False
        # The graph's list order need not be topological (ORT runs such graphs): sort these few.
        order = _topological_order(nodes, lambda n: [i for i in n.input if i],
                                   lambda v: p if (p := self.producer(v)) is not None and id(p) in seen else None)
        used = list(dict.fromkeys(i for n in order for i in n.input if i))
        sub_inits = [self.inits[k] for k in used if k in self.inits] + \
                    [self.outer_constants[k] for k in used if k in self.outer_constants]
        out_type = self.types.get(name)
        output = onnx.ValueInfoProto(name=name)
        if out_type is not None:
            output.type.CopyFrom(out_type)
        sub = helper.make_graph(order, "fold", [], [output], initializer=sub_inits)
        model = make_model(sub, opset_imports=[helper.make_opsetid(d, v) for d, v in self.opsets.items()])
        value = _evaluate(model)
        if value is None:
            return False
        previous = self.inits.get(name)
        self._add_initializer(numpy_helper.from_array(np.asarray(value), name))
        for node in reversed(order):  # the producing nodes go when nothing else reads their outputs
            if not any(o != name and self.readers.get(o) for o in node.output) and \
                    not any(o in self.outputs for o in node.output):
                self._remove(node)
        if self.producer(name) is not None:  # still produced by a node whose other outputs are in use
            self._pop_initializer(previous)
            return False
        self.report.folded.append(name)
        return True

    # --- graph queries ---------------------------------------------------------------------------

    def single_consumer(self, value: str):
        """The one node reading `value`, if exactly one does, once, as an input, and it is not a graph output."""
        if value in self.outputs:
            return None
        readers = self.readers.get(value)
        if not readers or len(readers) != 1:
            return None
        ((node, times),) = readers.values()
        return node if times == 1 and list(node.input).count(value) == 1 else None

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    # --- the rewrite -----------------------------------------------------------------------------

    def run(self):
        outer = {**self.outer_constants, **self.inits}
        for node in self.graph.node:
            for attr in node.attribute:
                for sub in _subgraphs(attr):
                    _GraphRewriter(sub, self.types, self.opsets, self.policy, self.report, outer).run()
        self.build_index()  # after the subgraphs' rewrites, which change the outer names they read
        for node in list(self.nodes):
            if id(node) in self.removed:  # folded into a constant for an earlier node
                continue
            if (node.domain in ("", "ai.onnx") and node.op_type == "Conv") or \
                    (node.domain == "com.microsoft" and node.op_type == "FusedConv"):
                self.convert(node)
        for node in list(self.nodes):
            if id(node) in self.removed:
                continue
            if node.domain == DOMAIN and node.op_type == "Conv":
                while self.fuse_next(node):
                    pass
                if self.policy.prepack:
                    self.prepack(node)
        self.sort_topologically()
        self.drop_unused_initializers()

    def convert(self, node):
        name = node.name or self.unique(f"{node.output[0] if node.output else 'unnamed'}_conv")
        reason = self.unsupported(node)
        if reason:
            self.report.left.append((name, reason))
            return
        inputs = list(node.input)
        for index in (1, 2):  # weights and bias held in constant subgraphs become initializers
            if index < len(inputs) and inputs[index] and self.producer(inputs[index]) is not None:
                self.constant(inputs[index])
        attrs = [a for a in node.attribute if a.name in CONV_ATTRIBUTES + ("activation", "activation_params")]
        new = helper.make_node("Conv", inputs, list(node.output), name=name, domain=DOMAIN)
        new.attribute.extend(attrs)
        new.doc_string = node.doc_string
        self._unindex(node)
        node.CopyFrom(new)  # in place: the node keeps its position without a search of the list
        self._index(node)
        self.report.replaced.append(name)

    def unsupported(self, node) -> str | None:
        """Why the op cannot (or by policy should not) run this node, or None."""
        given = [bool(i) for i in node.input]
        most = 4 if node.op_type == "FusedConv" else 3  # com.microsoft::FusedConv takes a residual Z too
        if given[:2] != [True, True] or len(given) > most or len(node.output) != 1 or not node.output[0]:
            optional = "optional B and Z" if most == 4 else "an optional B"
            return (f"ORT's {node.op_type} refuses this node too: it takes X, W and {optional} and gives one Y; "
                    f"this one has {sum(given)} input(s) and {sum(bool(o) for o in node.output)} output(s)")
        x, w = node.input[0], node.input[1]
        elem = None
        for value in (x, w):
            t = self.types.get(value)
            if t is not None and t.HasField("tensor_type") and t.tensor_type.elem_type:
                elem = t.tensor_type.elem_type
                break
        w_value = self.constant(w) if w else None
        if elem is None and w_value is not None:
            elem = helper.np_dtype_to_tensor_dtype(w_value.dtype)
        if elem != TensorProto.FLOAT:
            kind = TensorProto.DataType.Name(elem) if elem else "unknown"
            return f"element type {kind}: {DOMAIN}::Conv runs float32 only"
        w_shape = list(w_value.shape) if w_value is not None else _shape(self.types.get(w))
        invalid = _invalid_attributes(node, w_shape)
        if invalid:
            return f"ORT's Conv refuses this node too: {invalid}"
        rank = len(w_value.shape) if w_value is not None else None
        if rank is None:
            shape = _shape(self.types.get(x)) or _shape(self.types.get(w))
            kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
            rank = len(shape) if shape is not None else (len(kernel) + 2 if kernel else None)
        if rank is None:
            return "the input's rank is unknown (shape inference could not tell the spatial rank)"
        if rank not in (3, 4):
            return f"spatial rank {rank - 2}: {DOMAIN}::Conv runs 1-D and 2-D convolutions"
        if w_value is not None:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if self.policy.skip_pointwise and all(k == 1 for k in w_value.shape[2:]):
                return "1x1 (pointwise) conv kept on ORT by policy"
            if self.policy.skip_depthwise and group > 1 and w_value.shape[1] == 1:
                return "depthwise conv kept on ORT by policy"
        elif self.policy.skip_pointwise or self.policy.skip_depthwise:
            return "weights are not constant, so the pointwise/depthwise policy cannot tell the kind of conv"
        return None

    # --- fusions ---------------------------------------------------------------------------------

    def fuse_next(self, conv) -> bool:
        """Fuses the node after `conv` into it when possible; True if it did."""
        nxt = self.single_consumer(conv.output[0])
        if nxt is None or nxt.domain not in ("", "ai.onnx"):
            return False
        has_activation = any(a.name == "activation" and a.s for a in conv.attribute)
        has_residual = len(conv.input) > 3 and conv.input[3] != ""
        op = nxt.op_type
        done = None
        if has_activation:
            return False  # nothing can follow the activation inside the op
        if op == "BatchNormalization" and not has_residual:
            done = self.fold_batch_norm(conv, nxt)
        elif op in ("Mul", "Div") and not has_residual:
            done = self.fold_scale(conv, nxt)
        elif op in ("Add", "Sub"):
            done = self.fold_shift(conv, nxt) or (op == "Add" and not has_residual and self.fuse_residual(conv, nxt))
        elif op in ACTIVATIONS or op == "Clip":
            done = self.fuse_activation(conv, nxt)
        if not done:
            return False
        self._remove(nxt)
        self._set_output(conv, 0, nxt.output[0])
        self.report.fused.append(f"{op} '{nxt.name or nxt.output[0]}' into '{conv.name}'")
        return True

    def weights(self, conv):
        """(W, B) as arrays when both are constant (B zeros when absent), else None."""
        w = self.constant(conv.input[1])
        if w is None:
            return None
        b = self.constant(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0], w.dtype)
        return (w, b) if b is not None else None

    def set_weights(self, conv, w: np.ndarray, b: np.ndarray):
        """Stores new W and B as fresh initializers (the old ones may be shared with other nodes)."""
        inputs = list(conv.input) + [""] * (3 - len(conv.input))
        for index, (value, suffix) in enumerate(((w, "W"), (b, "B")), start=1):
            name = self.unique(f"{conv.name}_{suffix}")
            self._add_initializer(numpy_helper.from_array(value.astype(np.float32), name))
            inputs[index] = name
        self._set_inputs(conv, inputs)

    def per_channel(self, value: np.ndarray | None, channels: int, rank: int) -> np.ndarray | None:
        """A constant that broadcasts over Y (N x M x spatial) as one value per channel, as a vector."""
        if value is None or value.ndim > rank:
            return None
        if value.size == 1:
            return np.full(channels, float(value.reshape(-1)[0]), np.float32)
        shape = (1,) * (rank - value.ndim) + value.shape
        if shape[0] == 1 and shape[1] == channels and all(d == 1 for d in shape[2:]):
            return value.reshape(channels).astype(np.float32)
        return None

    def fold_batch_norm(self, conv, bn) -> bool:
        if any(a.name == "training_mode" and a.i for a in bn.attribute) or len([o for o in bn.output if o]) > 1 \
                or len(bn.input) != 5:
            return False
        params = [self.constant(name) for name in bn.input[1:5]]
        wb = self.weights(conv)
        if wb is None or any(p is None for p in params):
            return False
        w, b = wb
        scale, shift, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        factor = scale / np.sqrt(var + eps)
        if factor.size != w.shape[0]:
            return False
        self.set_weights(conv, _scale_rows(w, factor), (b - mean) * factor + shift)
        return True

    def other_input(self, conv, node) -> str | None:
        ins = list(node.input)
        if len(ins) != 2 or ins.count(conv.output[0]) != 1:
            return None
        return ins[1] if ins[0] == conv.output[0] else ins[0]

    def per_channel_operand(self, conv, node, second_only: bool):
        """(W, B, c) when `node` combines conv's output with a per-channel constant c (as its
        second operand when second_only: Div, Sub) and W, B are constant; else None."""
        other = self.other_input(conv, node)
        if other is None or (second_only and node.input[1] != other):
            return None
        wb = self.weights(conv)
        if wb is None:
            return None
        w, b = wb
        value = self.per_channel(self.constant(other), w.shape[0], w.ndim)
        return None if value is None else (w, b, value)

    def fold_scale(self, conv, node) -> bool:
        found = self.per_channel_operand(conv, node, second_only=node.op_type == "Div")
        if found is None:
            return False
        w, b, factor = found
        if node.op_type == "Div":
            if np.any(factor == 0):
                return False
            factor = 1.0 / factor
        self.set_weights(conv, _scale_rows(w, factor), b * factor)
        return True

    def fold_shift(self, conv, node) -> bool:
        found = self.per_channel_operand(conv, node, second_only=node.op_type == "Sub")
        if found is None:
            return False
        w, b, shift = found
        self.set_weights(conv, w, b - shift if node.op_type == "Sub" else b + shift)
        return True

    def fuse_residual(self, conv, add) -> bool:
        other = self.other_input(conv, add)
        y_shape, z_shape = _shape(self.types.get(conv.output[0])), _shape(self.types.get(other))
        out_shape = _shape(self.types.get(add.output[0]))
        # Z must have Y's shape exactly (no broadcasting); unknown dims must at least be the same symbol.
        if other is None or y_shape is None or z_shape is None or len(y_shape) != len(z_shape):
            return False
        if not self.same_shape(conv.output[0], other) or (out_shape is not None and not self.same_shape(conv.output[0], add.output[0])):
            return False
        inputs = list(conv.input) + [""] * (4 - len(conv.input))
        inputs[3] = other
        self._set_inputs(conv, inputs)
        return True

    def same_shape(self, a: str, b: str) -> bool:
        da, db = self.types[a].tensor_type.shape.dim, self.types[b].tensor_type.shape.dim
        if len(da) != len(db):
            return False
        for x, y in zip(da, db):
            if x.HasField("dim_value") and y.HasField("dim_value"):
                if x.dim_value != y.dim_value:
                    return False
            elif not (x.HasField("dim_param") and y.HasField("dim_param") and x.dim_param == y.dim_param):
                return False
        return True

    def fuse_activation(self, conv, act) -> bool:
        params: list[float] = []
        if act.op_type == "Clip":
            if self.opsets.get("", 11) < 11:  # min and max were attributes
                attrs = {a.name: a.f for a in act.attribute}
                params = [attrs.get("min", -FLOAT_MAX), attrs.get("max", FLOAT_MAX)]
            else:
                bounds = []
                for index, default in ((1, -FLOAT_MAX), (2, FLOAT_MAX)):
                    name = act.input[index] if len(act.input) > index else ""
                    value = self.constant(name) if name else np.float32(default)
                    if value is None or value.size != 1:
                        return False  # bounds computed at run time stay with ORT's Clip
                    bounds.append(float(value.reshape(-1)[0]))
                params = bounds
        else:
            attrs = {a.name: a.f for a in act.attribute}
            params = [attrs.get(name, default) for name, default in ACTIVATIONS[act.op_type]]
        conv.attribute.extend([helper.make_attribute("activation", act.op_type)])
        if params:
            conv.attribute.extend([helper.make_attribute("activation_params", [float(p) for p in params])])
        return True

    # --- pre-packed weights ----------------------------------------------------------------------

    def prepack(self, conv):
        """Stores W packed for a tile family (weight_layout), timed on this CPU or by the planner's
        rules (Policy.plan), when W is constant and X's channels and spatial size are known; a
        session runs that family (one pinned to another repacks W once, into a copy of its own)."""
        if any(a.name == "weight_layout" for a in conv.attribute):
            return
        w = self.constant(conv.input[1])
        x_shape = _shape(self.types.get(conv.input[0]))
        if w is None or not w.size or x_shape is None or len(x_shape) != w.ndim or any(d is None for d in x_shape[1:]):
            return  # (an empty W has nothing to order)
        try:
            from .. import _kernels
        except ImportError:  # no compiled kernels here: nothing to ask which layout they read
            return
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        options = {key: list(attrs[key]) for key in ("dilations", "pads", "strides") if key in attrs}
        options.update(group=attrs.get("group", 1), auto_pad=attrs.get("auto_pad", b"NOTSET").decode())
        choose = _kernels.measure_plan if self.policy.plan == "measure" else _kernels.workspace_bytes
        try:
            plan = choose([1] + x_shape[1:], list(w.shape), **options)
        except ValueError:
            return
        layout = FAMILY_LAYOUTS.get(plan["tile_family"])
        if layout is None:  # depthwise: its kernels read OIHW as it is
            return
        name = self.unique(f"{conv.name}_W_packed")
        self._add_initializer(numpy_helper.from_array(pack(w.astype(np.float32), layout, attrs.get("group", 1)), name))
        inputs = list(conv.input)
        inputs[1] = name
        self._set_inputs(conv, inputs)
        conv.attribute.extend([helper.make_attribute("weight_layout", layout)])

    # --- tidying ---------------------------------------------------------------------------------

    def sort_topologically(self):
        """Orders nodes so each comes after the producers of what it reads (a fused Z may be later)."""
        order = _topological_order(self.live_nodes(), lambda n: self.reads[id(n)], self.producer)
        del self.graph.node[:]
        self.graph.node.extend(order)

    def drop_unused_initializers(self):
        """Initializers the rewrite orphaned (W and B replaced by folded copies)."""
        used = {value for value, readers in self.readers.items() if readers} | self.outputs | self.graph_inputs
        keep = [t for t in self.graph.initializer if t.name in used]
        if len(keep) != len(self.graph.initializer):
            del self.graph.initializer[:]
            self.graph.initializer.extend(keep)


def _topological_order(nodes, reads, producer) -> list:
    """`nodes` ordered so that each comes after the producers (producer(name), None outside the
    set) of the names it reads: a depth-first walk in list order, which keeps a sorted list as it
    is. Iterative, so a chain of any length is sorted (Python's recursion stops near 1,000)."""
    state: dict[int, int] = {}  # id(node) -> 1 on the walk's path, 2 placed
    order = []
    for root in nodes:
        if id(root) in state:
            continue
        state[id(root)] = 1
        stack = [(root, iter(reads(root)))]
        while stack:
            node, pending = stack[-1]
            for value in pending:
                before = producer(value)
                if before is None or before is node or state.get(id(before)) == 2:
                    continue
                if state.get(id(before)) == 1:
                    raise RewriteError(f"the graph has a cycle through node '{before.name}'")
                state[id(before)] = 1
                stack.append((before, iter(reads(before))))
                break
            else:
                stack.pop()
                state[id(node)] = 2
                order.append(node)
    return order


def _array(tensor: TensorProto) -> np.ndarray:
    """The tensor's value; RewriteError naming it when its bytes cannot be read (onnx raises
    KeyError, TypeError or ValueError for an unknown element type or a size that is not its shape's)."""
    if tensor.data_type == TensorProto.UNDEFINED or tensor.data_type not in TensorProto.DataType.values():
        raise RewriteError(f"tensor '{tensor.name}' has element type {tensor.data_type}, which ONNX does not define")
    try:
        return numpy_helper.to_array(tensor)
    except Exception as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        why = lines[0] if lines else type(e).__name__
        raise RewriteError(f"tensor '{tensor.name}' cannot be read ({why})") from None


def _scale_rows(w: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """W with output channel m scaled by factor[m]."""
    return w * factor.reshape((-1,) + (1,) * (w.ndim - 1))


def _evaluate(model: onnx.ModelProto):
    """The single output of an input-free model, by ORT (which has every op at every opset) or,
    failing that, by onnx's reference evaluator; None if neither can run it."""
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {})[0]
    except Exception:
        pass
    try:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(model).run(None, {})[0]
    except Exception:
        return None


def _names_read(graph) -> set[str]:
    """Names a (sub)graph reads that it does not define itself: its outer-scope references."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {o for n in graph.node for o in n.output}
    read = set()
    for node in graph.node:
        read |= {i for i in node.input if i}
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                read |= _names_read(sub)
    read |= {o.name for o in graph.output}
    return read - defined
