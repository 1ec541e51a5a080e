"""Per-layer dtype plumbing shared by the torch-native backends (trial-process side only)."""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch

# The torch dtype of each dtype name a backend offers. tf32 tensors are fp32: TF32 is how
# cuda's matmuls and convolutions compute on them (set by the cuda backend).
TORCH_DTYPES = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def resolve_weight_map(names: list[str], weight_map: dict[str, str]) -> dict[str, str]:
    """Expand a {glob: dtype} map to {weight name: dtype}, with tt-xla's rules.

    Globs use fnmatch (`*` crosses dots); key "default" covers every `*.weight`; explicit
    globs beat "default", and where explicit globs overlap the later key wins, as within one
    `tt_torch.apply_weight_dtype_overrides` call. (TrialConfig keeps keys sorted, so spaces
    use non-overlapping globs.)
    """
    resolved: dict[str, str] = {}
    if "default" in weight_map:
        resolved = {n: weight_map["default"] for n in names if n.endswith(".weight")}
    for glob, dtype in weight_map.items():
        if glob != "default":
            resolved.update({n: dtype for n in names if fnmatchcase(n, glob)})
    return resolved


def apply_layer_dtypes(
    model: torch.nn.Module, weight_map: dict[str, str], activation: torch.dtype
) -> torch.nn.Module:
    """Run each layer whose weight is mapped in that dtype, casting at its boundary.

    The rest of the model (and all tensors between layers) stays in `activation`. This is
    real mixed precision: a bf16 layer runs bf16 kernels, an fp32 layer inside a bf16 model
    runs fp32 kernels; under torch.compile the casts fuse into neighbouring kernels.
    """
    model.to(activation)
    modules = dict(model.named_modules())
    names = [name for name, _ in model.named_parameters()]
    for name, dtype_name in resolve_weight_map(names, weight_map).items():
        dtype = TORCH_DTYPES[dtype_name]
        if dtype == activation:
            continue
        module = modules[name.rsplit(".", 1)[0] if "." in name else ""]
        module.to(dtype)
        module.register_forward_pre_hook(_cast_inputs(dtype))
        module.register_forward_hook(_cast_output(activation))
    return model


def _cast_inputs(dtype: torch.dtype):
    def hook(module: torch.nn.Module, args: tuple) -> tuple:
        return tuple(a.to(dtype) if torch.is_tensor(a) else a for a in args)

    return hook


def _cast_output(dtype: torch.dtype):
    def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.to(dtype)

    return hook
