"""Batch inference with Ray Data on com.im2win::Conv: each worker holds one ORT session of the rewritten model.

    pip install "im2win-ort[ray]"
    python examples/ray_batch_inference.py model.onnx --inputs x.npy --out y.npz [--workers 4] [--check]

The model is rewritten once, on the driver (im2win_ort.rewrite), and its bytes go to the workers, so no
worker needs the model file or rewrites anything; each worker is an actor of Ray Data's actor pool
(`map_batches` with a callable class) that creates its InferenceSession once, in __init__, and runs every
batch it is given. A worker takes one CPU and its session one intra-op thread (--threads), so the
workers do not oversubscribe the cores Ray gives them. On a cluster, `ray.init()` joins the cluster
named by RAY_ADDRESS and every node needs im2win-ort installed (the wheel: see docs/deploying.md).

--inputs is an .npy array whose first axis enumerates samples (each sample one input of the model,
batched along that axis); without it, --count random samples of the input's shape are made.
--check also runs the original model on ORT's own Conv and fails if any output differs beyond 1e-3
of its magnitude.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


class Im2winPredictor:
    """A Ray Data callable class: one im2win session per worker, created once."""

    def __init__(self, model: bytes, threads: int = 1):
        import im2win_ort

        # rewrite=False: the driver rewrote the model already; the session only registers the library.
        self.session = im2win_ort.InferenceSession(model, threads=threads, rewrite=False)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(batch["x"], dtype=np.float32)
        outputs = self.session.run(self.output_names, {self.input_name: x})
        return {"id": batch["id"], **{f"out.{name}": y for name, y in zip(self.output_names, outputs)}}


def rewritten_bytes(model) -> bytes:
    """The model (path, bytes or ModelProto) rewritten to com.im2win::Conv, serialized."""
    import im2win_ort

    return im2win_ort.rewrite(model).SerializeToString()


def run(model, inputs: np.ndarray, workers: int = 2, batch_size: int = 32, threads: int = 1) -> dict[str, np.ndarray]:
    """Runs `inputs` (samples along the first axis) through the rewritten model on `workers` Ray actors;
    returns every output, in the order of the inputs. Ray is started (locally) if it is not running."""
    import ray

    model_bytes = rewritten_bytes(model)
    items = [{"id": i, "x": sample} for i, sample in enumerate(np.asarray(inputs, dtype=np.float32))]
    dataset = ray.data.from_items(items).map_batches(
        Im2winPredictor,
        fn_constructor_kwargs={"model": model_bytes, "threads": threads},
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=1,
    )
    rows = dataset.take_all()  # Ray Data does not keep the input order unless told to: sort by id
    rows.sort(key=lambda r: int(r["id"]))
    if [int(r["id"]) for r in rows] != list(range(len(items))):
        raise RuntimeError(f"Ray returned {len(rows)} rows for {len(items)} inputs")
    names = [k for k in rows[0] if k.startswith("out.")] if rows else []
    return {name[len("out."):]: np.stack([r[name] for r in rows]) for name in names}


def reference_outputs(model, inputs: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """The original model's outputs on ORT's own Conv, batch by batch, for --check."""
    import onnxruntime as ort

    from im2win_ort.rewriter.model_io import load_model

    sess = ort.InferenceSession(load_model(model).SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    chunks = [sess.run(None, {name: inputs[i:i + batch_size]}) for i in range(0, len(inputs), batch_size)]
    return {o.name: np.concatenate([c[k] for c in chunks]) for k, o in enumerate(sess.get_outputs())}


def _random_inputs(model_path: str, count: int) -> np.ndarray:
    from im2win_ort.rewriter.model_io import load_model

    model = load_model(model_path)
    initializers = {t.name for t in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in initializers)
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in first.type.tensor_type.shape.dim][1:]
    return np.random.default_rng(0).standard_normal((count, *dims)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Batch inference with Ray Data on com.im2win::Conv")
    parser.add_argument("model", help="the ONNX model (its Conv nodes are rewritten to com.im2win::Conv)")
    parser.add_argument("--inputs", help=".npy file of samples along the first axis (default: random)")
    parser.add_argument("--count", type=int, default=256, help="random samples without --inputs (default 256)")
    parser.add_argument("--out", help="write the outputs to this .npz file")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors, one session each (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per batch (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session (default 1)")
    parser.add_argument("--check", action="store_true", help="compare every output with ORT's own Conv")
    args = parser.parse_args(argv)

    import ray

    inputs = np.load(args.inputs) if args.inputs else _random_inputs(args.model, args.count)
    ray.init(include_dashboard=False)
    try:
        outputs = run(args.model, inputs, args.workers, args.batch_size, args.threads)
    finally:
        ray.shutdown()
    print(f"{len(inputs)} samples on {args.workers} Ray workers: " +
          ", ".join(f"{k} {v.shape}" for k, v in outputs.items()))
    if args.out:
        np.savez(args.out, **outputs)
    if args.check:
        want = reference_outputs(args.model, inputs, args.batch_size)
        worst = max(float(np.max(np.abs(outputs[k] - w))) / max(1.0, float(np.max(np.abs(w)))) for k, w in want.items())
        print(f"largest difference from ORT's Conv: {worst:.3g} of the output's magnitude")
        if not worst <= 1e-3:
            print("FAILED", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
