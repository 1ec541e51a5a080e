"""STAND-IN for ``torch_xla.core`` (no Tenstorrent card here); see ``torch_xla/__init__.py``."""
