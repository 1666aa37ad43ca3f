"""somemodel: the team's scikit-learn compatible classifier, its safe persistence, and the
contract of the files the pipeline writes (somemodel.artifacts).

The classifier and its persistence are imported on first use (PEP 562): a process
that only reads or writes the pipeline's files (`somemodel.artifacts`, the merge
step) does not pay for importing scikit-learn and skops.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from somemodel._version import __version__
from somemodel.artifacts import MODEL_FILENAME

if TYPE_CHECKING:
    from somemodel.models import SomeModel
    from somemodel.persistence import ModelLoadError, load_model, save_model

_LAZY = {
    "SomeModel": "somemodel.models",
    "ModelLoadError": "somemodel.persistence",
    "load_model": "somemodel.persistence",
    "save_model": "somemodel.persistence",
}

__all__ = [
    "MODEL_FILENAME",
    "ModelLoadError",
    "SomeModel",
    "__version__",
    "load_model",
    "save_model",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'somemodel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
