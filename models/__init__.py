"""Standard CNNs for the memory and speed comparisons, exported to ONNX the way users export them.

Two backends emit the same graphs with the same seeded weights:
- "onnx": onnx_builder, numpy + onnx.helper only (always available);
- "torch": torch_models, plain torch.nn definitions exported with torch.onnx.export (needs PyTorch,
  imported lazily).

    import models
    model = models.build("resnet50")                              # onnx.ModelProto
    small = models.build("resnet18", width=0.125, resolution=32, num_classes=10)
    same = models.build("resnet18", backend="torch", width=0.125, resolution=32, num_classes=10)

`python -m models.export NAME` writes NAME.onnx (see export.py). This directory is not installed.
"""

from __future__ import annotations

from typing import Callable

import onnx

from .onnx_builder import NETWORKS as _ONNX_NETWORKS

__all__ = ["BACKENDS", "NETWORKS", "build", "default_backend", "names", "resolve", "torch_available"]

#: network name -> ONNX builder (keyword options: width, resolution, num_classes, seed, fold_bn,
#: batch_dynamic, batch)
NETWORKS: dict[str, Callable[..., onnx.ModelProto]] = dict(_ONNX_NETWORKS)

BACKENDS = ("onnx", "torch")


def names() -> list[str]:
    return list(NETWORKS)


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def resolve(name: str) -> str:
    """The registry name for `name`, ignoring case, '-' and '_' (so "MobileNetV2" is
    "mobilenet_v2"); KeyError listing the names when there is none."""
    if name in NETWORKS:
        return name
    matches = [n for n in NETWORKS if _key(n) == _key(str(name))]
    if len(matches) != 1:
        raise KeyError(f"unknown network {name!r}; choose from: {', '.join(NETWORKS)}")
    return matches[0]


def torch_available() -> bool:
    """Whether PyTorch imports (importing it is what the torch backend does anyway)."""
    try:
        import torch  # noqa: F401
    except Exception:
        return False
    return True


def default_backend() -> str:
    """"torch" when PyTorch is importable, else "onnx"."""
    return "torch" if torch_available() else "onnx"


def build(name: str, backend: str = "onnx", **options) -> onnx.ModelProto:
    """The ONNX model of network `name` from `backend` ("onnx", "torch" or "auto" = default_backend()).

    Options (both backends): width, resolution, num_classes, seed, fold_bn, batch_dynamic (default
    True: batch axis "N") and batch (the fixed size otherwise); the torch backend also takes dynamo
    and opset (see torch_models.export_model)."""
    name = resolve(name)
    if backend == "auto":
        backend = default_backend()
    if backend == "onnx":
        return NETWORKS[name](**options)
    if backend == "torch":
        from . import torch_models

        return torch_models.export_model(name, **options)
    raise ValueError(f"unknown backend {backend!r}; choose from: {', '.join(BACKENDS)}, auto")
