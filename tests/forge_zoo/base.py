"""`ForgeModel` as tt-forge-models' base.py documents it: variants (`_VARIANTS`,
`DEFAULT_VARIANT`, checked in `__init__`), abstract `load_model` / `load_inputs`, and
`get_weight_dtype_config_path()` = `<loader dir>/mixed_precision_configs/<model name>.json`."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar


class ForgeModel(ABC):
    _VARIANTS: ClassVar[dict[Any, str]] = {}
    DEFAULT_VARIANT: ClassVar[Any] = None

    def __init__(self, variant: Any = None) -> None:
        if self._VARIANTS:
            variant = self.DEFAULT_VARIANT if variant is None else variant
            if variant not in self._VARIANTS:
                raise ValueError(f"Invalid variant {variant!r}; available: {list(self._VARIANTS)}")
        self._variant = variant

    @classmethod
    def query_available_variants(cls) -> dict[Any, str]:
        return dict(cls._VARIANTS)

    @abstractmethod
    def load_model(self, **kwargs: Any) -> Any: ...

    @abstractmethod
    def load_inputs(self, **kwargs: Any) -> Any: ...

    def model_name(self) -> str:
        return self.NAME + (f"_{self._variant}" if self._variant else "")

    def get_weight_dtype_config_path(self) -> str | None:
        loader_dir = Path(inspect.getfile(type(self))).parent
        return str(loader_dir / "mixed_precision_configs" / f"{self.model_name()}.json")
