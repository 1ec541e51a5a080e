"""OpenVINO as a CPU compiler (`compile_config` is tuner side too: torch and openvino are
imported only where a model is compiled or run).

The model is converted by ``openvino.convert_model`` (OpenVINO's PyTorch frontend, tracing
the model on its first real input) and compiled for the CPU by ``Core.compile_model`` with
`compile_config`'s properties. Why not ``torch.compile(backend="openvino")``: with
openvino 2026.4.1 and torch 2.13.0 it fails while dynamo builds its guards
("sources must not be empty for symbol s7", seen on the MNIST CNN), while convert_model
works and is the path OpenVINO documents first.

Streams: OpenVINO runs its own (``NUM_STREAMS``); each of autotune's stream threads holds
an infer request of its own (a request is not thread-safe), and OpenVINO schedules the
requests over its streams. Precision: OpenVINO's ``INFERENCE_PRECISION_HINT`` (bf16 or f32)
is the activation dtype; the whole model runs at it (no per-layer map). Inputs stay fp32 on
the host; outputs are copied out of the request (the request reuses its buffers).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The CPU property the activation dtype sets (openvino.properties.hint.inference_precision).
PRECISION = {"fp32": "f32", "bf16": "bf16"}


def compile_config(
    activation_dtype: str, streams: int, threads: int | None = None
) -> dict[str, str]:
    """The properties given to ``Core.compile_model(model, "CPU", config)``: the precision
    hint, the streams autotune runs and, where known (the trial process), the threads they
    share. The LATENCY hint keeps OpenVINO from choosing streams itself (THROUGHPUT would;
    autotune searches them)."""
    properties = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": PRECISION[activation_dtype],
        "NUM_STREAMS": str(streams),
    }
    if threads is not None:
        properties["INFERENCE_NUM_THREADS"] = str(threads)
    return properties


class OpenVINOModel:
    """A model compiled by OpenVINO on its first call, callable as the model is
    (``m(x)``, ``m(*xs)``, ``m(**xs)``); returns a tensor, or a tuple for several outputs."""

    def __init__(self, model: torch.nn.Module, config: dict[str, str]) -> None:
        self.model = model.eval()
        self.config = config
        self._compiled: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def _compile(self, inputs: tuple[torch.Tensor, ...], names: tuple[str, ...] | None) -> Any:
        import openvino as ov
        import torch

        example: Any = dict(zip(names, inputs, strict=True)) if names else inputs
        if len(inputs) == 1 and not names:
            example = inputs[0]
        with torch.no_grad():
            converted = ov.convert_model(self.model, example_input=example)
        return ov.Core().compile_model(converted, "CPU", self.config)

    def __call__(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> Any:
        import torch

        inputs = (*args, *kwargs.values())
        if self._compiled is None:
            with self._lock:
                if self._compiled is None:
                    self._compiled = self._compile(inputs, tuple(kwargs) or None)
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        request.infer([t.numpy() for t in inputs])
        outs = [
            torch.from_numpy(request.get_output_tensor(i).data.copy())
            for i in range(len(self._compiled.outputs))
        ]
        return outs[0] if len(outs) == 1 else tuple(outs)
