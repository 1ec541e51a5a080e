from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from autotune.errors import UsageError
from studies.metrics import AGREEMENT, BUILTIN, PCC, TOP1, Metric

if TYPE_CHECKING:
    import torch

__all__ = [
    "AGREEMENT",
    "PCC",
    "TOP1",
    "FactoryStudy",
    "Metric",
    "Study",
    "UnknownStudyError",
    "Weight",
    "discover_weights",
    "get_study",
    "study_names",
]

#: A batch as a study holds it: a tensor, a tuple/list or a dict of tensors, dim 0 the batch.
Batch = Any


@dataclass(frozen=True)
class Weight:
    """A weight tensor the dtype map may lower: its `named_parameters()` name and op kind."""

    name: str
    kind: Literal["linear", "conv"]


class Study(ABC):
    """A model to tune: how to build it, what to evaluate it on, and how to score it.

    Contract:

    - ``build_model()``: the fp32 ``nn.Module`` in eval mode with its trained weights.
    - ``eval_data()``: ``(inputs, labels)`` on the CPU. ``inputs`` is a batch: a tensor, a
      tuple or a dict of tensors of any dtype, dim 0 the batch in each (fed as ``model(x)``,
      ``model(*x)`` or ``model(**x)``); ``labels`` a tensor, or None.
    - ``example_input(batch_size)``: a batch of that size for timing (default: random
      normal of ``sample_shape`` when set, else the eval inputs' rows, repeated as needed).
    - Floating-point inputs take the trial's activation dtype; integer and bool inputs
      (token ids, masks, categories) are never cast.
    - ``output``: which output is scored when the model returns a tuple, a dict or a
      ``ModelOutput`` (a key or an index; default ``logits``, else the first floating tensor).
    - ``metric``: how outputs are scored (`studies.metrics.Metric`: name, unit, direction,
      default tolerance); default top-1 accuracy with labels, PCC against fp32 without.
    - ``weights``: the weights the dtype map may lower, in model order; default every
      Linear and Conv weight of the model (a list here narrows them).
    - ``group_by_role``: one dtype dimension per layer role (``layer.*.query.weight``)
      however few the weights (by default only deep models are grouped so).
    - ``notes()``: lines said when a study starts (e.g. why its metric is fidelity);
      ``decode(output)``: the fp32 output in words, said once, where the study can tell.

    Study modules must not import torch at import time: the tuner reads a study's metadata
    without it, and builds models only in trial processes.
    """

    name: str
    description: str = ""
    sample_shape: tuple[int, ...] | None = None
    weights: tuple[Weight, ...] | None = None
    max_batch_size: int = 4096
    output: str | int | Callable[[Any], torch.Tensor] | None = None
    metric: Metric | None = None
    group_by_role: bool = False

    @abstractmethod
    def build_model(self) -> torch.nn.Module: ...

    @abstractmethod
    def eval_data(self) -> tuple[Batch, torch.Tensor | None]: ...

    def example_input(self, batch_size: int) -> Batch:
        """A batch for timing (like the seed's `generate_input`)."""
        import torch

        if self.sample_shape is not None:
            gen = torch.Generator().manual_seed(0)
            return torch.randn((batch_size, *self.sample_shape), generator=gen)
        from autotune.pytree import cycle_rows

        return cycle_rows(self.eval_data()[0], batch_size)

    def notes(self) -> list[str]:
        return []

    def decode(self, output: Any) -> str | None:
        return None

    def scoring(self, has_labels: bool) -> Metric:
        """The metric in force: the study's own, else top-1 with labels, PCC without."""
        if self.metric is not None:
            return self.metric
        return TOP1 if has_labels else PCC

    def tunable_weights(self, model: torch.nn.Module) -> tuple[Weight, ...]:
        """`weights` when the study lists them, else those `discover_weights` finds."""
        return self.weights if self.weights is not None else discover_weights(model)


def discover_weights(model: torch.nn.Module) -> tuple[Weight, ...]:
    """Every Linear and Conv (1-3 d) weight of `model`, in model order (embeddings, norms
    and biases are not lowered, nor a Linear tied to an embedding, as language-model heads
    are). A weight shared by several modules is listed once."""
    import torch

    kinds = {torch.nn.Linear: "linear", torch.nn.Conv1d: "conv", torch.nn.Conv2d: "conv"}
    kinds[torch.nn.Conv3d] = "conv"
    found: dict[int, Weight] = {}
    names = {id(p): n for n, p in model.named_parameters()}  # the first name of each
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    for module in model.modules():
        kind = next((k for cls, k in kinds.items() if isinstance(module, cls)), None)
        weight = getattr(module, "weight", None)
        if kind is None or not isinstance(weight, torch.nn.Parameter) or id(weight) not in names:
            continue
        if id(weight) in embedded:
            continue
        found.setdefault(id(weight), Weight(names[id(weight)], kind))  # type: ignore[arg-type]
    return tuple(found.values())


class FactoryStudy(Study):
    """A study made from a plain function, for models that need no Study subclass.

    The function takes no arguments and returns ``(model, inputs)`` or ``(model, inputs,
    labels)``: an fp32 module and a batch of real inputs (a tensor, tuple or dict), used as
    the eval set and, repeated, for timing. Every process that needs the model (each trial
    process, the fp32 reference) calls it again, with torch's RNG seeded to 0 first, so
    randomly initialised weights are the same everywhere."""

    def __init__(self, name: str, factory: Callable[[], Any]) -> None:
        self.name = name
        doc = (factory.__doc__ or "").strip()
        self.description = doc.splitlines()[0] if doc else f"the model of {name}"
        self.factory = factory
        self._made: tuple[Any, Batch, Any] | None = None

    def _make(self) -> tuple[Any, Batch, Any]:
        if self._made is None:
            import torch

            torch.manual_seed(0)
            made = self.factory()
            if not isinstance(made, tuple) or len(made) not in (2, 3):
                raise TypeError(
                    f"model factory {self.name!r} must return (model, inputs) or "
                    f"(model, inputs, labels), not {type(made).__name__}"
                )
            model, inputs, *labels = made
            if not isinstance(model, torch.nn.Module):
                raise TypeError(
                    f"model factory {self.name!r} returned a {type(model).__name__} as its "
                    "model, not a torch.nn.Module"
                )
            self._made = (model, inputs, labels[0] if labels else None)
        return self._made

    def build_model(self) -> torch.nn.Module:
        import copy

        return copy.deepcopy(self._make()[0]).float().eval()  # each caller gets its own

    def eval_data(self) -> tuple[Batch, torch.Tensor | None]:
        _, inputs, labels = self._make()
        return inputs, labels


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
    """A registered study by name, a model from where it lives (``hf:``, ``torchvision:``,
    ``timm:``, see `studies.sources`), or a user's own as ``path/to/file.py:ATTR`` or
    ``package.module:ATTR``, where ATTR is a `Study` instance or subclass, a factory
    function (`FactoryStudy`), or a tt-forge-models loader class (``ATTR[@variant]``,
    `studies.sources.forge`).

    Loading a user's model imports and runs that file or module: it is code execution of the
    user's own code, exactly as running it with python would be.
    """
    from studies import sources

    base, options = sources.split_spec(name)
    if any(k in options for k in sources.GENERIC_OPTIONS):
        return _with_generic_options(name, base, options)
    if sources.prefix_of(name) is not None:
        if name not in _USER_STUDIES:
            _USER_STUDIES[name] = sources.resolve(name)
        return _USER_STUDIES[name]
    if ":" in name:
        return _load_user_study(name)
    name, options = sources.split_spec(name)
    if name in _registry():
        sources.check_options(name, options, ())
    try:
        return _registry()[name]
    except KeyError:
        raise UnknownStudyError(
            f"unknown model {name!r}; known models: {', '.join(study_names())}, or "
            "path/to/file.py:ATTR or package.module:ATTR"
        ) from None


_USER_STUDIES: dict[str, Study] = {}


def _with_generic_options(spec: str, base: str, options: dict[str, Any]) -> Study:
    """The study of `spec` without its generic options, with them applied (a copy: the
    study itself stays as its source made it)."""
    import copy

    from studies import sources

    if spec not in _USER_STUDIES:
        name = options.pop("metric")
        if name not in BUILTIN:
            raise UsageError(f"--metric must be one of {', '.join(BUILTIN)}, not {name!r}")
        study = copy.copy(get_study(sources.with_options(base, **options)))
        study.metric = BUILTIN[name]
        _USER_STUDIES[spec] = study
    return _USER_STUDIES[spec]


def _load_user_study(spec: str) -> Study:
    if spec not in _USER_STUDIES:
        from studies import sources

        base, options = sources.split_spec(spec)
        source, _, attr = base.rpartition(":")
        attr, at, variant = attr.partition("@")
        module = _import_file(spec, source) if source.endswith(".py") else _import(spec, source)
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise UnknownStudyError(
                f"cannot load model {spec!r}: {source} has no {attr!r}"
            ) from None
        loader = sources.loader_study(spec, obj, variant if at else None, options)
        if loader is not None:
            _USER_STUDIES[spec] = loader
            return loader
        sources.check_options(spec, options, ())
        if at:
            raise UnknownStudyError(
                f"model {spec!r}: @variant is for tt-forge-models loaders; {attr} is not one"
            )
        if isinstance(obj, type) and issubclass(obj, Study):
            obj = obj()
        if isinstance(obj, Study):
            _USER_STUDIES[spec] = obj
        elif callable(obj):
            _USER_STUDIES[spec] = FactoryStudy(spec, obj)
        else:
            raise UnknownStudyError(
                f"model {spec!r} is a {type(obj).__name__}: give a studies.Study instance or "
                "subclass, or a function returning (model, inputs[, labels])"
            )
    return _USER_STUDIES[spec]


def _import(spec: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownStudyError(f"cannot load model {spec!r}: {exc}") from None
    except Exception as exc:  # the user's module failed while it ran
        raise UnknownStudyError(
            f"cannot load model {spec!r}: {type(exc).__name__}: {exc}"
        ) from None


def _import_file(spec: str, source: str) -> Any:
    """The module at `source` (relative to the working directory), imported once per
    process under a name derived from its absolute path."""
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise UnknownStudyError(f"cannot load model {spec!r}: no file {source}")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_name = f"autotune_user_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # before it runs: dataclasses and pickle look it up
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise UnknownStudyError(
            f"cannot load model {spec!r}: {type(exc).__name__}: {exc}"
        ) from None
    return module
