"""Runs batch-1 conv layers of the benchmark's layer sets on com.im2win::Conv, RUNS times each, in
ORT sessions with THREADS intra-op threads (spinning off) and the planner's rules (im2win.plan=heuristic:
timing plans under valgrind would choose at random, and runs with different plans count different
work): the workload for counting instructions per inference with callgrind (docs/design.md, Redundant work), e.g.

    export OPENBLAS_NUM_THREADS=1
    for t in 1 16; do for r in 1 3; do
      valgrind --tool=callgrind python scripts/conv_layers_run.py $t $r cv9,cv12,resnet50.16,mobilenetv2.25,mobilenetv2.27
    done; done

instructions per inference = (total at 3 runs - total at 1 run) / 2.
"""

import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import im2win_ort
from im2win_ort._ir_version import make_model
from im2win_ort.measure.layer_sets import LAYER_SETS


def main(argv) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    threads, runs, names = int(argv[0]), int(argv[1]), argv[2].split(",")
    layers = {layer.name: layer for name, make in LAYER_SETS.items() if name != "tiny"
              for layer in (make((1,)) if name == "paper" else make())}
    rng = np.random.default_rng(0)
    sessions = []
    for name in names:
        layer = layers[name]
        node = helper.make_node("Conv", ["x", "w"], ["y"], domain=im2win_ort.DOMAIN, name=name,
                                strides=[layer.stride] * 2, pads=[layer.pad] * 4, group=layer.group)
        w = numpy_helper.from_array(rng.standard_normal(layer.w_shape).astype(np.float32), "w")
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, layer.x_shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
        model = make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(im2win_ort.DOMAIN, 1)])
        so = im2win_ort.session_options(threads, plan="heuristic")
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions.append((ort.InferenceSession(model.SerializeToString(), so),
                         rng.standard_normal(layer.x_shape).astype(np.float32)))
    for _ in range(runs):
        for sess, x in sessions:
            sess.run(None, {"x": x})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
