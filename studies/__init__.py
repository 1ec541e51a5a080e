"""What is tuned: one module per model, each defining ``STUDY``.

Adding a model is one new file here: the registry discovers every module of this package
that defines a ``STUDY`` instance. Study modules must not import torch at import time (the
tuner reads their metadata without it); torch is imported inside the methods, which only
run in trial processes.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from autotune.errors import UsageError

if TYPE_CHECKING:
    import torch

__all__ = ["Study", "UnknownStudyError", "Weight", "get_study", "study_names"]


@dataclass(frozen=True)
class Weight:
    """A weight tensor the dtype map may lower: its `named_parameters()` name and op kind."""

    name: str
    kind: Literal["linear", "conv"]


class Study(ABC):
    """A model to tune: how to build it, what to evaluate it on, and how to score it.

    Contract: ``build_model()`` returns an fp32 ``nn.Module`` in eval mode with its trained
    weights; ``eval_data()`` returns ``(inputs, labels)`` as CPU tensors (labels may be None
    for models without labels, then accuracy is agreement with fp32); ``weights`` lists every
    weight the dtype map may lower, in model order (a test checks it against the model).
    """

    name: str
    description: str
    sample_shape: tuple[int, ...]
    weights: tuple[Weight, ...]
    max_batch_size: int = 4096

    @abstractmethod
    def build_model(self) -> torch.nn.Module: ...

    @abstractmethod
    def eval_data(self) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def example_input(self, batch_size: int) -> torch.Tensor:
        """A random input batch for timing (like the seed's `generate_input`)."""
        import torch

        gen = torch.Generator().manual_seed(0)
        return torch.randn((batch_size, *self.sample_shape), generator=gen)


class UnknownStudyError(UsageError):
    pass


def _discover() -> dict[str, Study]:
    found: dict[str, Study] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        study = getattr(importlib.import_module(f"{__name__}.{info.name}"), "STUDY", None)
        if isinstance(study, Study):
            found[study.name] = study
    return found


_REGISTRY: dict[str, Study] | None = None


def _registry() -> dict[str, Study]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _discover()
    return _REGISTRY


def study_names() -> list[str]:
    return sorted(_registry())


def get_study(name: str) -> Study:
    """A registered study by name, or a user's own as ``package.module:ATTR``.

    ``module:attr`` imports and runs that module: it is code execution of the user's own
    module, exactly as running it with python would be.
    """
    if ":" in name:
        return _load_user_study(name)
    try:
        return _registry()[name]
    except KeyError:
        raise UnknownStudyError(
            f"unknown model {name!r}; known models: {', '.join(study_names())}"
        ) from None


def _load_user_study(spec: str) -> Study:
    module_name, _, attr = spec.partition(":")
    try:
        study = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownStudyError(f"cannot load model {spec!r}: {exc}") from None
    if not isinstance(study, Study):
        raise UnknownStudyError(f"model {spec!r} is not a studies.Study instance")
    return study
