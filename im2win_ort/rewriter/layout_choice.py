"""rewrite(layout="auto"): each channels-last region kept only where it measured faster.

A region (layout_regions.py) is cut out of the rewritten model as a model of its own: its nodes,
the initializers they read, the values entering it as inputs (at the static shapes ONNX shape
inference gave the original model; a symbolic batch is 1) and the values read outside it as
outputs. That model runs in ORT as it is (NCHW) and switched to NHWC with its border transposes,
the runs of the two interleaved on this CPU at the given thread count, and the region goes
channels-last only when its median is at least MARGIN faster: a tie keeps ONNX's layout, which
needs no transposes. What is written stays portable (the choice is a layout attribute); only
which regions got it depends on the CPU the rewrite ran on, as the measured tile families do.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass

import onnx
from onnx import helper

from .layout_regions import subgraph_reads, to_channels_last

MARGIN = 0.03  # NHWC must take under 97% of NCHW's time: within the noise, ONNX's layout stays
MIN_RUNS, MAX_RUNS, BUDGET_S = 5, 40, 0.5  # timed runs of each layout: at least 5, then until the budget
# Shapes come from the model, untrusted: a region whose inputs would take more than this, or whose
# first run takes longer than SLOW_RUN_S, is not timed (it keeps ONNX's layout).
MAX_INPUT_BYTES = 1 << 30
SLOW_RUN_S = 5.0


class _TooSlow(Exception):
    pass


@dataclass
class RegionTiming:
    first_node: str
    convs: int
    nchw_s: float
    nhwc_s: float

    @property
    def faster_nhwc(self) -> bool:
        return self.nhwc_s < (1 - MARGIN) * self.nchw_s

    def describe(self, threads: int) -> str:
        chosen = "NHWC" if self.faster_nhwc else "NCHW"
        return (f"region of {self.convs} conv(s) from '{self.first_node}' at {threads} thread(s): "
                f"NCHW {1e3 * self.nchw_s:.3g} ms, NHWC {1e3 * self.nhwc_s:.3g} ms: {chosen}")


def _static_type(type_proto, batch: int):
    """type_proto with a symbolic first dim set to `batch`, or None if any other dim is unknown."""
    if type_proto is None or not type_proto.HasField("tensor_type") or \
            not type_proto.tensor_type.HasField("shape"):
        return None
    dims = []
    for i, d in enumerate(type_proto.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(d.dim_value)
        elif i == 0:
            dims.append(batch)
        else:
            return None
    return helper.make_tensor_type_proto(type_proto.tensor_type.elem_type, dims)


def region_model(model: onnx.ModelProto, members: list[int], types: dict, batch: int = 1):
    """The region's nodes as a model of their own (see the module docstring), or why it cannot be."""
    graph = model.graph
    inside = set(members)
    nodes = [copy.deepcopy(graph.node[i]) for i in sorted(members)]
    produced = {o for n in nodes for o in n.output if o}
    initializers = {t.name: t for t in graph.initializer}
    read_outside = {o.name for o in graph.output} | subgraph_reads(graph.node)
    for i, node in enumerate(graph.node):
        if i not in inside:
            read_outside.update(node.input)
    inputs, inits, seen = [], [], set()
    for node in nodes:
        for name in node.input:
            if not name or name in produced or name in seen:
                continue
            seen.add(name)
            if name in initializers:
                inits.append(initializers[name])
                continue
            static = _static_type(types.get(name), batch)
            if static is None:
                return f"the shape of '{name}', which enters it, is not static"
            inputs.append(helper.make_value_info(name, static))
    outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None)
               for n in nodes for o in n.output[:1] if o in read_outside]
    if not outputs:
        return "nothing outside reads it"
    region = helper.make_graph(nodes, "region", inputs, outputs, inits)
    out = helper.make_model(region, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out


def _median_times(sessions, feeds) -> list[float]:
    for session in sessions:  # warm-up: the first run packs weights and sizes the workspace
        t0 = time.perf_counter()
        session.run(None, feeds)
        if time.perf_counter() - t0 > SLOW_RUN_S:
            raise _TooSlow
        session.run(None, feeds)
    times = [[] for _ in sessions]
    start = time.perf_counter()
    while len(times[0]) < MIN_RUNS or (len(times[0]) < MAX_RUNS and time.perf_counter() - start < BUDGET_S):
        for session, t in zip(sessions, times):  # interleaved, so that drift in the machine hits both
            t0 = time.perf_counter()
            session.run(None, feeds)
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def time_region(model: onnx.ModelProto, threads: int = 1) -> tuple[float, float] | str:
    """(NCHW, NHWC) median seconds of a region model (region_model), or why it could not run."""
    from ..session import NCHWC_FREE, InferenceSession
    from .validate import random_inputs

    size = 0
    for value in model.graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        size += 4 * math.prod(dims)
    if size > MAX_INPUT_BYTES:
        return f"its inputs would take {size / 2**30:.3g} GiB"
    nhwc = copy.deepcopy(model)
    to_channels_last(nhwc)
    try:
        feeds = random_inputs(model)
        sessions = [InferenceSession(m.SerializeToString(), threads=threads, rewrite=False,
                                     disabled_optimizers=NCHWC_FREE) for m in (model, nhwc)]
        nchw_s, nhwc_s = _median_times(sessions, feeds)
    except _TooSlow:
        return f"one run took over {SLOW_RUN_S:g} s"
    except Exception as e:  # noqa: BLE001 - any failure keeps the region as ONNX lays it out
        return f"it could not be timed ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return nchw_s, nhwc_s


class MeasuredChoice:
    """layout_regions.to_channels_last's `choose` for layout="auto": times each region both ways."""

    def __init__(self, types: dict, threads: int = 1):
        self.types, self.threads = types, threads
        self.timings: list[RegionTiming] = []

    def __call__(self, model: onnx.ModelProto, members: list[int], convs: int) -> str | None:
        """None to make the region channels-last, else why it stays NCHW."""
        region = region_model(model, members, self.types)
        if isinstance(region, str):
            return f"layout auto: not measured, {region}"
        timed = time_region(region, self.threads)
        if isinstance(timed, str):
            return f"layout auto: not measured, {timed}"
        timing = RegionTiming(model.graph.node[min(members)].name, convs, *timed)
        self.timings.append(timing)
        if timing.faster_nhwc:
            return None
        return (f"layout auto: its region measured NCHW {1e3 * timing.nchw_s:.3g} ms, NHWC "
                f"{1e3 * timing.nhwc_s:.3g} ms at {self.threads} thread(s)")

    def describe(self) -> list[str]:
        return [t.describe(self.threads) for t in self.timings]
