"""The ONNX IR version of the models this package writes, so that every supported ONNX Runtime loads them.

onnx's ``helper.make_model`` stamps its own newest IR version (onnx 1.23: IR 14), which an ONNX Runtime
built against an older onnx refuses: "Unsupported model IR version: 14, max supported IR version: 10"
from onnxruntime 1.21, "...: 13" from 1.30. ORT has no public API for the newest IR version it reads,
and a table keyed by ORT release goes stale with every release (and knows nothing of builds from source).

What does not go stale: a runtime that implements an opset also reads the IR version that opset was
released with (ORT's onnx is at least that new). So the models get the lowest IR version their opset
imports need, from onnx's own release table (``helper.find_min_ir_version_for``, the choice
torch.onnx.export makes too: opset 17 is IR 8). That version is never above what the installed ORT
reads whenever that ORT implements the opsets at all, does not change with the installed onnx (a model
written here loads into an older runtime elsewhere: a serving fleet), and suffices because these models
use no later IR feature (float8, int4 types, ...): they are float32. Custom domains (com.im2win) need
nothing of the IR. Two floors: IR 7 (onnx 1.8, read by every ORT since 1.6), because before IR 4 an
initializer had to be a graph input too (old opsets alone would ask for IR 3); IR 8 for model-local
functions. The rewriter keeps a user's model at its own IR version.
"""

from __future__ import annotations

import onnx
from onnx import helper

MIN_IR_VERSION = 7
FUNCTIONS_IR_VERSION = 8


def ir_version_for(opset_imports, functions: bool = False) -> int:
    """The IR version for a model with these opset imports (OperatorSetIdProto or (domain, version)
    pairs; unknown domains need nothing) and, if functions, model-local functions."""
    ids = [o if isinstance(o, onnx.OperatorSetIdProto) else helper.make_opsetid(*o) for o in opset_imports]
    floor = FUNCTIONS_IR_VERSION if functions else MIN_IR_VERSION
    return max(floor, helper.find_min_ir_version_for(ids, ignore_unknown=True))


def make_model(graph: onnx.GraphProto, **kwargs) -> onnx.ModelProto:
    """onnx.helper.make_model with the IR version of ``ir_version_for`` unless ir_version is given.
    Pass opset_imports: without them onnx imports its newest opset, which an older ORT lacks."""
    model = helper.make_model(graph, **kwargs)
    if "ir_version" not in kwargs:
        model.ir_version = ir_version_for(model.opset_import, functions=len(model.functions) > 0)
    return model
