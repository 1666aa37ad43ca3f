"""somemodel: the team's scikit-learn compatible classifier, its safe persistence, and the
contract of the files the pipeline writes (somemodel.artifacts)."""

from somemodel._version import __version__
from somemodel.artifacts import MODEL_FILENAME
from somemodel.models import SomeModel
from somemodel.persistence import ModelLoadError, load_model, save_model

__all__ = [
    "MODEL_FILENAME",
    "ModelLoadError",
    "SomeModel",
    "__version__",
    "load_model",
    "save_model",
]
