"""``--model torchvision:<name>`` and ``--model timm:<name>``: the vision model zoos, imported
only in trial processes: run them with ``--trial-python`` set to the interpreter that
``tests/vision_venv/setup_venv.sh`` builds (PyPI's torchvision does not import beside the
main venv's CPU torch). The tuner side needs neither torchvision nor timm.

Weights come from ``--weights FILE`` (a state dict: ``torch.save`` or safetensors), else the
model keeps its random initialisation (seeded: the same in every process) and, having no
trained predictions to keep, is scored by fidelity against fp32; the study says so. The
input shape is the model's default: the crop size of torchvision's default weights' transforms,
timm's ``pretrained_cfg["input_size"]``. Eval data: ``--eval-data FILE`` (``(images,
labels)``, labels may be None), else random normal images of that shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotune.errors import UsageError
from studies import Study
from studies.sources.data import load_eval_data, load_state_dict

if TYPE_CHECKING:
    import torch

EVAL_ROWS = 64  # random images when no --eval-data


def make_study(spec: str, prefix: str, target: str, options: dict[str, Any]) -> Study:
    return ZooStudy(spec, prefix, target, options)


def import_zoo(prefix: str) -> Any:
    """The zoo's module, or one line saying why it cannot be used."""
    try:
        if prefix == "timm":
            import timm

            return timm
        import torchvision.models

        return torchvision.models
    except ImportError:
        raise UsageError(
            f"--model {prefix}:... needs {prefix} in the trial interpreter: "
            "tests/vision_venv/setup_venv.sh builds one and prints its python; pass it as "
            "--trial-python"
        ) from None
    except RuntimeError as exc:
        # PyPI's torchvision is built against PyPI's (CUDA) torch; beside a CPU-only torch
        # its operators fail to register ("operator torchvision::nms does not exist").
        raise UsageError(
            f"{prefix} cannot be imported here ({exc}): torchvision must be built for this "
            "torch; run the trials in an interpreter where it is: "
            "tests/vision_venv/setup_venv.sh builds one (torch 2.14.1 + torchvision 0.29.1 + "
            "timm from PyPI) and prints its python; pass it as --trial-python"
        ) from None


class ZooStudy(Study):
    def __init__(self, spec: str, prefix: str, target: str, options: dict[str, Any]) -> None:
        self.name = spec
        self.prefix = prefix
        self.target = target
        self.weights_file: str | None = options.get("weights")
        self.eval_file: str | None = options.get("eval_data")
        self.description = f"{prefix} {target}"
        #: keyword arguments for the zoo's builder (``num_classes``, ``width_mult``, ...); a
        #: study file sets them, as ``studies/examples/vision_mnist.py`` does
        self.builder_kwargs: dict[str, Any] = {}
        self._data: tuple[Any, Any] | None = None
        self._shape: tuple[int, ...] | None = None

    def notes(self) -> list[str]:
        if self.weights_file is None:
            return [
                f"{self.prefix}:{self.target} has random weights (no --weights FILE): the "
                "metric is fidelity against fp32"
            ]
        return []

    def _create(self) -> torch.nn.Module:
        zoo = import_zoo(self.prefix)
        try:
            if self.prefix == "timm":
                return zoo.create_model(self.target, pretrained=False, **self.builder_kwargs)
            return zoo.get_model(self.target, weights=None, **self.builder_kwargs)
        except (RuntimeError, ValueError, KeyError) as exc:  # unknown model name
            raise ValueError(f"{self.prefix} has no model {self.target!r}: {exc}") from None

    def build_model(self) -> torch.nn.Module:
        import torch

        torch.manual_seed(0)  # random weights: the same in every process
        model = self._create()
        if self.weights_file is not None:
            model.load_state_dict(load_state_dict(self.weights_file))
        return model.float().eval()

    def input_shape(self) -> tuple[int, ...]:
        """(channels, height, width) the model expects by default."""
        if self._shape is None:
            zoo = import_zoo(self.prefix)
            if self.prefix == "timm":
                cfg = zoo.models.get_pretrained_cfg(self.target) or {}
                size = getattr(cfg, "input_size", None) or (3, 224, 224)
                self._shape = tuple(size)
            else:
                try:
                    crop = list(zoo.get_model_weights(self.target).DEFAULT.transforms().crop_size)
                except (ValueError, KeyError, AttributeError):  # a model with no weights listed
                    crop = [224]
                self._shape = (3, *(crop * 2 if len(crop) == 1 else crop))
        return self._shape

    def eval_data(self) -> tuple[Any, torch.Tensor | None]:
        if self._data is None:
            if self.eval_file is not None:
                self._data = load_eval_data(self.eval_file)
            else:
                import torch

                gen = torch.Generator().manual_seed(1)
                self._data = (torch.randn((EVAL_ROWS, *self.input_shape()), generator=gen), None)
        return self._data
