"""Memory and speed of a whole network: the rewritten model against ORT's own Conv and PyTorch.

    im2win-ort compare MODEL.onnx [--batch 1,16] [--threads 1] [--runs 10] [--out DIR] [--no-arena]
                                  [--torch NAME | --no-torch] [--input-shape NAME=Nx3x224x224]

Configurations, each measured in a fresh process (im2win_ort/measure/compare_worker.py) so that its peak
memory is its own:
  ort_all       MODEL in ORT at ORT_ENABLE_ALL (ORT's default: NCHWc blocked Conv)
  ort_extended  MODEL in ORT at ORT_ENABLE_EXTENDED (im2col + SGEMM Conv, ORT's leanest)
  im2win        MODEL rewritten once here (im2win_ort.rewrite), in ORT at ORT_ENABLE_ALL without its NCHWc
                transformer when every Conv is ours (as im2win_ort.InferenceSession runs it)
  im2win_nhwc   the same, rewritten with layout="nhwc" (`rewrite --layout nhwc`): connected convs and
                the pools between them run channels-last, transposed only at the regions' borders
  torch_onednn  the same network in PyTorch, oneDNN enabled (PyTorch's default dispatch)
  torch_im2col  the same network in PyTorch with oneDNN (and NNPACK) off: its im2col + GEMM path
The PyTorch ones run when torch is importable and the model is a network of models/ (named by
--torch, by the model's metadata as models/ writes it, or by its file name).

For every configuration, batch and thread count: VmRSS before the model is loaded (runtime
imported, inputs loaded), VmRSS after loading, VmHWM (peak RSS) of the whole process and of the
runs alone, the median of --runs timed runs after warm-up, and the largest absolute and relative difference of its outputs
from ORT_ENABLE_ALL's on the same inputs (written once to an .npz that every worker reads).
Per Conv layer (shapes from ONNX shape inference at each batch): the bytes of im2col's matrix,
of the paper's im2win tensor, of a direct convolution (0) and of the window panel that
com.im2win::Conv reserves per thread (_kernels.workspace_bytes).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import _args
from .compare_report import CONFIGS, REFERENCE, REPORT_FILES, format_text, write_atomic, write_report
from .compare_worker import RESULT_MARKER
from ..rewriter.validate import DEFAULT_TOLERANCE  # largest |difference| / max(1, max |reference|), as `rewrite --validate`

DEFAULT_BATCHES = (1, 16)
WORKER = Path(__file__).resolve().parent / "compare_worker.py"


class CompareError(Exception):
    """Bad input or arguments; the message is the whole one-line explanation."""


# ------------------------------------------------------------------------------------------------
# Input shapes
# ------------------------------------------------------------------------------------------------

def parse_int_list(text: str, option: str) -> list[int]:
    try:
        return _args.integers(text, option)
    except _args.ArgumentError as e:
        raise CompareError(str(e)) from None


def parse_input_shapes(items) -> dict[str, list]:
    """--input-shape NAME=D1xD2x...: each D a positive integer, or N for the batch dimension."""
    shapes = {}
    for item in items or []:
        name, sep, dims = item.rpartition("=")
        if not sep or not name or not dims:
            raise CompareError(f"--input-shape takes NAME=DIMS such as input=Nx3x224x224, got {item!r}")
        parsed = []
        for d in dims.lower().split("x"):
            if d == "n":
                parsed.append("N")
                continue
            try:
                value = _args.integer(d, "--input-shape", minimum=1)
            except _args.ArgumentError:
                raise CompareError(f"--input-shape {item}: dimension {d!r} is neither a positive integer "
                                   f"nor N") from None
            if value > _args.INT32_MAX:
                raise CompareError(f"--input-shape {item}: dimension {d} is over {_args.INT32_MAX}")
            parsed.append(value)
        shapes[name] = parsed
    return shapes


def graph_inputs(model):
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def _dims(value):
    """The input's dims as ints and symbolic names (str; "?" when unnamed), or None for unknown rank."""
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in t.shape.dim]


def _example(name: str, dims) -> str:
    shown = ["N" if i == 0 and isinstance(d, str) else str(d) if isinstance(d, int) else d.upper()
             for i, d in enumerate(dims)] if dims else ["N", "3", "224", "224"]
    return f"--input-shape {name}={'x'.join(shown)}"


def plan_inputs(model, batches, overrides: dict[str, list]) -> tuple[list[int], dict[int, dict[str, list[int]]]]:
    """(batches, {batch: {input name: shape}}) for the model's inputs.

    A symbolic first dimension is the batch and takes each batch value; any other symbolic
    dimension must come from --input-shape (whose first dimension, or N, also takes the batch when
    the model's first dimension is symbolic). A model whose batch is fixed runs at that batch only.
    """
    inputs = graph_inputs(model)
    if not inputs:
        raise CompareError("the model has no inputs to feed")
    names = {v.name for v in inputs}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise CompareError(f"--input-shape names no input of the model: {', '.join(unknown)} "
                           f"(inputs: {', '.join(sorted(names))})")
    templates, fixed_batches, batched = {}, set(), False
    for value in inputs:
        if not value.type.HasField("tensor_type"):
            raise CompareError(f"input '{value.name}' is not a tensor; compare feeds tensors only")
        dims = _dims(value)
        if value.name in overrides:
            given = overrides[value.name]
            if dims is not None and len(dims) != len(given):
                raise CompareError(f"--input-shape {value.name}: {len(given)} dimensions given, the model's input "
                                   f"has {len(dims)}")
            template = list(given)
            for i, (m, g) in enumerate(zip(dims or [], given)):
                if isinstance(m, int) and isinstance(g, int) and m != g:
                    raise CompareError(f"--input-shape {value.name}: dimension {i} is {g}, the model fixes it at {m}")
            if template and (template[0] == "N" or dims is None or isinstance(dims[0], str)):
                template[0] = "N"
            if "N" in template[1:]:
                raise CompareError(f"--input-shape {value.name}: only the first dimension can be N (the batch)")
        else:
            if dims is None:
                raise CompareError(f"input '{value.name}' has no shape in the model; give it with "
                                   f"{_example(value.name, None)}")
            template = ["N" if i == 0 and isinstance(d, str) else d for i, d in enumerate(dims)]
            symbolic = [(i, d) for i, d in enumerate(template) if isinstance(d, str) and d != "N"]
            if symbolic:
                i, d = symbolic[0]
                raise CompareError(f"input '{value.name}': dimension {i} ('{d}') is symbolic and not the batch, so its "
                                   f"size is unknown; give the shape with {_example(value.name, dims)} "
                                   f"(numbers for {', '.join(str(s[1]).upper() for s in symbolic)})")
        if template and template[0] == "N":
            batched = True
        elif template:
            fixed_batches.add(template[0])
        templates[value.name] = template
    if not batched:
        fixed = sorted(fixed_batches) or [1]
        if batches is None:
            batches = fixed[:1]
        elif batches != fixed[:1] or len(fixed) > 1:
            first = inputs[0]
            raise CompareError(f"the model's batch is fixed (input '{first.name}' is "
                               f"{'x'.join(map(str, templates[first.name])) or 'a scalar'}); --batch "
                               f"{','.join(map(str, batches))} needs a symbolic batch dimension")
    batches = list(batches) if batches is not None else list(DEFAULT_BATCHES)
    plan = {b: {name: [b if d == "N" else d for d in t] for name, t in templates.items()} for b in batches}
    return batches, plan


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_input_sizes(model, batches, plan) -> None:
    """Refuses batches whose inputs alone would not fit in this machine's memory: every
    configuration holds them (compare writes them to an .npz first), so no run could finish."""
    from onnx import helper

    limit = physical_memory()
    if limit is None:
        return
    elements = {v.name: v.type.tensor_type.elem_type for v in graph_inputs(model)}

    def itemsize(elem) -> int:
        try:
            return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem)).itemsize)
        except Exception:
            return 8

    for batch in batches:
        size = sum(math.prod(shape) * itemsize(elements.get(name)) for name, shape in plan[batch].items())
        if size > limit:
            raise CompareError(f"batch {batch}: the inputs alone would take {size / 2**30:.3g} GiB, more than the "
                               f"{limit / 2**30:.3g} GiB of memory here; give a smaller --batch or --input-shape")


def _fix_shapes(values, shapes: dict[str, list[int]]) -> None:
    for value in values:
        if value.name in shapes:
            shape = value.type.tensor_type.shape
            shape.Clear()
            for d in shapes[value.name]:
                shape.dim.add().dim_value = int(d)


def input_stub(model, shapes: dict[str, list[int]]):
    """A model holding only the graph inputs of `model`, at the given static shapes (what
    validate.random_inputs reads)."""
    import onnx

    stub = onnx.ModelProto()
    stub.graph.input.extend(graph_inputs(model))
    _fix_shapes(stub.graph.input, shapes)
    return stub


def shape_model(model, shapes: dict[str, list[int]], keep_elements: int = 4096):
    """A light copy of `model` for shape inference at the given input shapes: initializers of more
    than keep_elements elements become typed graph inputs (their values are not needed for shapes,
    and a network's weights are most of its bytes); small ones stay, for shape computations."""
    import onnx
    from onnx import helper

    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph, source = light.graph, model.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    declared = {v.name for v in source.input}
    for t in source.initializer:
        if math.prod(t.dims) <= keep_elements:
            graph.initializer.append(t)
        elif t.name not in declared:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    _fix_shapes(graph.input, shapes)
    return light


# ------------------------------------------------------------------------------------------------
# Per-layer workspace
# ------------------------------------------------------------------------------------------------

def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _known_shapes(model) -> dict[str, tuple[list[int], int]]:
    """name -> (static shape, element size in bytes) for every value ONNX shape inference sizes."""
    import onnx
    from onnx import helper

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        inferred = model

    def size(elem_type) -> int:
        try:
            return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
        except Exception:
            return 4

    known = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                known[value.name] = ([int(d.dim_value) for d in dims], size(value.type.tensor_type.elem_type))
    for t in graph.initializer:
        known[t.name] = ([int(d) for d in t.dims], size(t.data_type))
    return known


def is_conv(node) -> bool:
    from .._library import DOMAIN

    return ((node.domain in ("", "ai.onnx", DOMAIN) and node.op_type == "Conv")
            or (node.domain == "com.microsoft" and node.op_type == "FusedConv"))


def conv_geometry(x_shape, w_shape, attrs: dict):
    """(strides, dilations, pads begin, pads end, group) of a Conv node's attributes (ONNX defaults
    filled in, auto_pad resolved) for these shapes."""
    from .. import reference

    rank = len(x_shape) - 2
    strides = list(attrs.get("strides") or [1] * rank)
    dilations = list(attrs.get("dilations") or [1] * rank)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = (auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)) or "NOTSET"
    begin, end = reference.resolve_pads(list(x_shape[2:]), list(w_shape[2:]), strides, dilations, auto_pad,
                                        attrs.get("pads"))
    return strides, dilations, begin, end, int(attrs.get("group", 1))


def conv_nodes(model, shapes: dict[str, list[int]]):
    """(name, node, X shape, W shape, X element bytes) of every Conv of the top-level graph at the
    given input shapes (ONNX shape inference); the shapes are None where it cannot size them."""
    fixed = shape_model(model, shapes)
    known = _known_shapes(fixed)
    for node in fixed.graph.node:
        if not is_conv(node):
            continue
        x_shape, elem = known.get(node.input[0], (None, 4))
        w_shape = known.get(node.input[1], (None, 4))[0] if len(node.input) > 1 else None
        if not x_shape or not w_shape or len(x_shape) != len(w_shape) or len(x_shape) < 3:
            x_shape = w_shape = None
        yield node.name or f"{node.output[0]}_conv", node, x_shape, w_shape, elem


def layer_workspace(x_shape, w_shape, attrs: dict, elem: int = 4) -> dict:
    """Workspace bytes of one Conv (x: N x C x [H x] W, w: M x C/group x [Kh x] Kw).

    im2col  N x C x Kh x Kw x Ho x Wo   (the column matrix of every image and group)
    im2win  N x C x Ho x Wp x Kh        (the paper's window tensor; Wp = padded input width; a
                                         1-D conv is H = Kh = Ho = 1)
    direct  0
    ours    com.im2win::Conv's window panel per thread (_kernels.workspace_bytes), which does not
            grow with N
    """
    from .. import _kernels, reference

    n, c = x_shape[0], x_shape[1]
    spatial, kernel = list(x_shape[2:]), list(w_shape[2:])
    rank = len(spatial)
    strides, dilations, begin, end, group = conv_geometry(x_shape, w_shape, attrs)
    padded = [s + b + e for s, b, e in zip(spatial, begin, end)]
    out = [reference.output_size(p, k, s, d) for p, k, s, d in zip(padded, kernel, strides, dilations)]
    record = {"x_shape": list(x_shape), "w_shape": list(w_shape), "y_shape": [n, w_shape[0], *out], "group": group,
              "kernel": kernel, "strides": strides, "pads": begin + end, "dilations": dilations,
              "input_bytes": elem * math.prod(x_shape),
              "im2col_bytes": elem * n * c * math.prod(kernel) * math.prod(out),
              "im2win_bytes": None, "direct_bytes": 0, "ours_per_thread_bytes": None}
    if rank in (1, 2):
        kh, ho = (kernel[0], out[0]) if rank == 2 else (1, 1)
        record["im2win_bytes"] = elem * n * c * ho * padded[-1] * kh
    try:
        ws = _kernels.workspace_bytes(list(x_shape), list(w_shape), strides=strides, pads=begin + end,
                                      dilations=dilations, group=group)
    except Exception as e:
        record["ours_note"] = str(e).splitlines()[0]
    else:
        record["ours_per_thread_bytes"] = int(ws["im2win_per_thread"])
        record["kernels_im2col_per_image_group_bytes"] = int(ws["im2col"])
        record["tile"] = f"{ws.get('tile_family', '')} {ws.get('tile', '')}".strip()
    return record


def conv_layers(model, shapes: dict[str, list[int]], left: set[str] = frozenset()) -> list[dict]:
    """Every Conv of the top-level graph, with its workspace at the given input shapes."""
    layers = []
    for name, node, x_shape, w_shape, elem in conv_nodes(model, shapes):
        base = {"name": name, "op": f"{node.domain + '::' if node.domain else ''}{node.op_type}",
                "on_im2win": name not in left}
        if x_shape is None:
            layers.append({**base, "note": "shapes unknown to ONNX shape inference"})
            continue
        try:
            layers.append({**base, **layer_workspace(x_shape, w_shape, _attrs(node), elem)})
        except Exception as e:
            layers.append({**base, "note": f"cannot size this layer ({e})"})
    return layers


def layer_totals(layers: list[dict]) -> dict:
    """The largest layer (what a buffer reused layer by layer needs) and the sum over layers."""
    totals = {}
    for key in ("input_bytes", "im2col_bytes", "im2win_bytes", "direct_bytes", "ours_per_thread_bytes"):
        values = [l[key] for l in layers if l.get(key) is not None]
        totals[key] = {"max": max(values) if values else None, "sum": sum(values) if values else None}
    totals["layers"] = len(layers)
    return totals


# ------------------------------------------------------------------------------------------------
# PyTorch: which network of models/
# ------------------------------------------------------------------------------------------------

def _models_package():
    """The models/ package (network definitions), or None: importable as is, else from the
    directory IM2WIN_MODELS_ROOT names (`python -m models` sets it for the installed package it
    runs) or the source tree this package sits in (either added at the end of sys.path)."""
    try:
        import models  # noqa: F401

        if hasattr(models, "NETWORKS"):
            return models
    except ImportError:
        pass
    roots = [Path(os.environ["IM2WIN_MODELS_ROOT"])] if os.environ.get("IM2WIN_MODELS_ROOT") else []
    roots.append(Path(__file__).resolve().parents[2])
    root = next((r for r in roots if (r / "models" / "__init__.py").is_file()), None)
    if root is not None:
        if str(root) not in sys.path:
            sys.path.append(str(root))
        try:
            import models

            return models if hasattr(models, "NETWORKS") else None
        except ImportError:
            return None
    return None


def _metadata(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _number(text, kind):
    try:
        return kind(float(text)) if kind is int else kind(text)
    except (TypeError, ValueError):
        return None


def torch_network(model, model_path: Path, requested: str | None, disabled: bool) -> dict:
    """{"network", "options", "source"} of the PyTorch twin of the model, or {"skipped": reason}."""
    if disabled:
        return {"skipped": "--no-torch"}
    if importlib.util.find_spec("torch") is None:
        return {"skipped": "torch is not installed"}
    models = _models_package()
    if models is None:
        return {"skipped": "models/ (the network definitions) is not importable"}
    meta = _metadata(model)
    name, source = None, None
    try:
        if requested:
            name, source = models.resolve(requested), "--torch"
        elif meta.get("im2win.network"):
            name, source = models.resolve(meta["im2win.network"]), "model metadata"
        else:
            stem = model_path.name.split(".")[0]
            name, source = models.resolve(stem), "file name"
    except KeyError as e:
        if requested:
            raise CompareError(str(e).strip("\"'")) from None
        return {"skipped": "the model is not a network of models/ (name it with --torch NAME)"}
    options = {}
    if meta.get("im2win.network") and models.resolve(meta["im2win.network"]) == name:
        for key, kind in (("width", float), ("resolution", int), ("num_classes", int), ("seed", int)):
            value = _number(meta.get(f"im2win.{key}"), kind)
            if value is not None:
                options[key] = value
    else:  # what the graph shows: the input resolution and the number of classes
        dims = _dims(graph_inputs(model)[0]) or []
        if len(dims) == 4 and isinstance(dims[2], int) and dims[2] == dims[3]:
            options["resolution"] = dims[2]
        out = model.graph.output[0].type.tensor_type
        if out.HasField("shape") and out.shape.dim and out.shape.dim[-1].HasField("dim_value"):
            options["num_classes"] = int(out.shape.dim[-1].dim_value)
    root = Path(models.__file__).resolve().parent
    if not (root / "torch_models.py").is_file():
        return {"skipped": "models/torch_models.py (the PyTorch definitions) is missing"}
    return {"network": name, "options": options, "source": source, "models_root": str(root.parent)}


# ------------------------------------------------------------------------------------------------
# Running the configurations
# ------------------------------------------------------------------------------------------------

def run_worker(spec: dict, scratch: Path, timeout: float | None = None) -> dict:
    """Runs one configuration in a fresh interpreter; its measurements, or {"error": ...}."""
    spec_path = scratch / f"spec-{spec['config']}-b{spec['batch']}-t{spec['threads']}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    # Thread pools of OpenMP/MKL (PyTorch) follow the configuration's thread count, not the machine's.
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec["threads"])
    try:
        proc = subprocess.run([sys.executable, str(WORKER), str(spec_path)], capture_output=True, text=True,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    last = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
    if proc.returncode == -9:
        why += " (out of memory?)"
    return {"error": f"the worker process ended without a result ({why})" + (f": {last[-1]}" if last else "")}


def output_difference(reference: Path, outputs: Path) -> dict:
    """Largest |a - b| and |a - b| / max(1, max |a|) over all outputs (a: the reference's)."""
    with np.load(reference) as want, np.load(outputs) as got:
        if sorted(want.files) != sorted(got.files):
            return {"max_abs_err": math.inf, "max_rel_err": math.inf,
                    "agreement_note": f"{len(got.files)} output(s), the reference has {len(want.files)}"}
        max_abs = max_rel = 0.0
        for key in want.files:
            a, b = np.asarray(want[key], np.float64), np.asarray(got[key], np.float64)
            if a.shape != b.shape:
                return {"max_abs_err": math.inf, "max_rel_err": math.inf,
                        "agreement_note": f"output shape {list(b.shape)}, the reference's is {list(a.shape)}"}
            if a.size:
                diff = float(np.max(np.abs(a - b)))
                max_abs = max(max_abs, diff)
                max_rel = max(max_rel, diff / max(1.0, float(np.max(np.abs(a)))))
    return {"max_abs_err": max_abs, "max_rel_err": max_rel}


def _save_npz_atomic(path: Path, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue(), binary=True)


def compare(model_path, batches=None, threads=(1,), runs: int = 10, warmup: int = 2, out_dir=None,
            arena: bool = True, torch_name: str | None = None, no_torch: bool = False, input_shapes=None,
            configs=None, tolerance: float = DEFAULT_TOLERANCE, progress: bool = True, timeout=None) -> dict:
    """Runs the comparison and writes the report; returns the report dict (see module docstring).
    Every argument is checked before anything is written."""
    from .bench import machine_info
    from ..rewriter.model_io import ModelError, check_outputs, data_file, load_model_with_files, save_model
    from ..rewriter import RewriteError, rewrite_with_report
    from ..rewriter.validate import random_inputs
    from ..session import NCHWC_FREE, _has_onnx_conv

    try:
        runs = _args.integer(runs, "--runs", minimum=1, maximum=_args.INT32_MAX)
        warmup = _args.integer(warmup, "--warmup", minimum=0, maximum=_args.INT32_MAX)
        tolerance = _args.number(tolerance, "--tolerance", minimum=0)
        if timeout is not None:
            timeout = _args.number(timeout, "--timeout", above=0, maximum=_args.MAX_TIMEOUT_S)
        if batches:
            batches = [_args.integer(b, "--batch", minimum=1, maximum=_args.INT32_MAX) for b in batches]
        threads = [_args.integer(t, "--threads", minimum=1, maximum=_args.INT32_MAX) for t in threads]
    except _args.ArgumentError as e:
        raise CompareError(str(e)) from None
    model_path = Path(model_path)
    try:
        model, model_files = load_model_with_files(model_path)
    except ModelError as e:
        raise CompareError(str(e)) from None
    batches, plan = plan_inputs(model, list(batches) if batches else None, input_shapes or {})
    check_input_sizes(model, batches, plan)
    configs = list(configs or CONFIGS)
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        raise CompareError(f"unknown configuration(s) {', '.join(bad)}; choose from {', '.join(CONFIGS)}")
    configs = [c for c in CONFIGS if c in configs]  # the reference, ORT_ENABLE_ALL, runs first
    twin = torch_network(model, model_path, torch_name, no_torch)
    if "skipped" in twin:
        configs = [c for c in configs if CONFIGS[c][1] != "torch"]
    stem = model_path.name[:-len(".onnx")] if model_path.name.endswith(".onnx") else model_path.stem
    try:
        rewritten, rewrite_report = rewrite_with_report(model)
        rewritten_nhwc = rewrite_with_report(model, layout="nhwc")[0] if "im2win_nhwc" in configs else None
        # As InferenceSession does: with every Conv on ours, no NCHWc reorders around the pools.
        nchwc_free = [] if _has_onnx_conv(rewritten.graph) else NCHWC_FREE
    except (RewriteError, ModelError, ValueError) as e:
        raise CompareError(f"{model_path}: cannot rewrite the model ({e})") from None
    out_dir = Path(out_dir) if out_dir else Path(f"im2win-compare-{stem}")
    if out_dir.exists() and not out_dir.is_dir():
        raise CompareError(f"{out_dir}: exists and is not a directory; choose another --out")
    rewritten_paths = {"im2win": out_dir / f"{stem}.im2win.onnx"}
    if rewritten_nhwc is not None:
        rewritten_paths["im2win_nhwc"] = out_dir / f"{stem}.im2win-nhwc.onnx"
    rewritten_path = rewritten_paths["im2win"]
    outputs = [f for path in rewritten_paths.values() for f in (path, data_file(path))] + \
              [out_dir / f"inputs-b{b}.npz" for b in batches] + [out_dir / name for name in REPORT_FILES]
    try:
        check_outputs(outputs, model_files)
    except ModelError as e:
        raise CompareError(str(e)) from None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CompareError(f"{out_dir}: cannot create the output directory ({e.strerror or e})") from None
    try:
        for config, proto in (("im2win", rewritten), ("im2win_nhwc", rewritten_nhwc)):
            if proto is not None:
                save_model(proto, rewritten_paths[config], external_data=True if len(model_files) > 1 else None,
                           inputs=model_files)
    except ModelError as e:
        raise CompareError(str(e)) from None
    del rewritten, rewritten_nhwc
    left = {name for name, _ in rewrite_report.left}

    from .._library import get_library_path

    library = get_library_path()
    steps = len(batches) * len(threads) * len(configs)
    # tqdm draws in place on a terminal and one refresh per line elsewhere (a log, CI).
    bar = tqdm(total=steps, file=sys.stderr, unit="run", disable=not progress, dynamic_ncols=True)
    results, layers = [], {}
    with tempfile.TemporaryDirectory(prefix="im2win-compare-") as tmp:
        scratch = Path(tmp)
        for batch in batches:
            shapes = plan[batch]
            layers[str(batch)] = conv_layers(model, shapes, left)
            feeds = random_inputs(input_stub(model, shapes), seed=batch)
            inputs_path = out_dir / f"inputs-b{batch}.npz"
            _save_npz_atomic(inputs_path, feeds)
            del feeds
            reference_outputs = None
            for t in threads:
                for config in configs:
                    label, kind = CONFIGS[config]
                    bar.set_description(f"{config} batch {batch} threads {t}")
                    outputs = scratch / f"out-{config}-b{batch}-t{t}.npz"
                    spec = {"config": config, "kind": kind, "batch": batch, "threads": t, "runs": runs,
                            "warmup": warmup, "inputs": str(inputs_path.resolve()), "outputs": str(outputs)}
                    if kind == "ort":
                        ours = config in rewritten_paths
                        spec.update(model=str((rewritten_paths[config] if ours else model_path).resolve()),
                                    level="extended" if config == "ort_extended" else "all", arena=arena,
                                    library=library if ours else None,
                                    disabled_optimizers=nchwc_free if ours else [])
                    else:
                        spec.update(models_root=twin["models_root"], network=twin["network"],
                                    options=twin["options"], mkldnn=config == "torch_onednn")
                    measured = run_worker(spec, scratch, timeout)
                    record = {"config": config, "label": label, "batch": batch, "threads": t,
                              "arena": arena if kind == "ort" else None, **measured}
                    record["ok"] = "error" not in measured
                    if record["ok"] and config == REFERENCE and reference_outputs is None:
                        reference_outputs = outputs
                    if record["ok"] and reference_outputs is not None:
                        record.update(output_difference(reference_outputs, outputs))
                        record["agrees"] = record["max_rel_err"] <= tolerance
                    results.append(record)
                    bar.update()
    bar.close()

    report = {
        "kind": "compare", "model": str(model_path), "rewritten_model": str(rewritten_path),
        **({"rewritten_model_nhwc": str(rewritten_paths["im2win_nhwc"])} if "im2win_nhwc" in rewritten_paths else {}),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(list(threads)),
        "settings": {"batches": batches, "threads": list(threads), "runs": runs, "warmup": warmup, "arena": arena,
                     "configs": configs, "tolerance": tolerance,
                     "input_shapes": {str(b): plan[b] for b in batches}},
        "rewrite": rewrite_report.to_dict(),
        "torch": twin,
        "results": results,
        "layers": layers,
        "layer_totals": {b: layer_totals(ls) for b, ls in layers.items()},
    }
    report["files"] = write_report(report, out_dir, stem)
    return report


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="im2win-ort compare",
        description="Peak memory, latency and agreement of a model in ORT (ENABLE_ALL, ENABLE_EXTENDED), "
                    "rewritten to com.im2win::Conv (NCHW and channels-last), and in PyTorch (oneDNN on and off) for networks of models/; "
                    "each configuration in a fresh process.")
    parser.add_argument("model", help="the ONNX model (never modified)")
    parser.add_argument("--batch", help="comma-separated batch sizes (default 1,16; a model with a fixed batch: "
                                        "that batch)")
    parser.add_argument("--threads", default="1", help="comma-separated intra-op thread counts (default 1)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per configuration (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--out", help="report directory (default ./im2win-compare-<model stem>)")
    parser.add_argument("--no-arena", action="store_true", help="turn ORT's CPU memory arena off")
    parser.add_argument("--torch", metavar="NAME", help="the network of models/ the model is (default: from the "
                                                        "model's metadata or file name)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--input-shape", action="append", metavar="NAME=DIMS",
                        help="shape of an input with symbolic dimensions, e.g. input=Nx3x224x224 (N: the batch); "
                             "repeat for several inputs")
    parser.add_argument("--configs", help=f"comma-separated subset of {','.join(CONFIGS)} (default: all)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest relative difference from ORT ENABLE_ALL's outputs accepted "
                             f"(default {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--timeout", type=float, help="seconds after which a configuration is given up")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..rewriter.model_io import ModelError

    args = build_parser().parse_args(argv)
    try:
        batches = parse_int_list(args.batch, "--batch") if args.batch else None
        threads = parse_int_list(args.threads, "--threads")
        configs = [c for c in args.configs.split(",") if c] if args.configs else None
        report = compare(args.model, batches=batches, threads=threads, runs=args.runs, warmup=args.warmup,
                         out_dir=args.out, arena=not args.no_arena, torch_name=args.torch, no_torch=args.no_torch,
                         input_shapes=parse_input_shapes(args.input_shape), configs=configs,
                         tolerance=args.tolerance, progress=not args.no_progress, timeout=args.timeout)
    except (CompareError, ModelError) as e:  # ModelError: an output replaced by a link or FIFO while it ran
        print(f"im2win-ort compare: error: {_args.one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("im2win-ort compare: interrupted", file=sys.stderr)
        return 130
    print(format_text(report))
    files = report["files"]
    print(f"\nreport: {files['markdown']}, {files['json']}"
          + (f"; charts: {', '.join(files['charts'])}" if files["charts"] else f"; no charts: {report.get('charts_note')}"))
    failed = [r for r in report["results"] if not r["ok"]]
    mismatched = [r for r in report["results"] if r["ok"] and r.get("agrees") is False]
    if failed or mismatched:
        print(f"im2win-ort compare: {len(failed)} configuration(s) failed, {len(mismatched)} disagree with ORT "
              f"ENABLE_ALL beyond {args.tolerance:g}; see the report", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
