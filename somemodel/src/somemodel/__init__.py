"""somemodel: the team's scikit-learn compatible classifier and its safe persistence."""

from somemodel._version import __version__
from somemodel.models import SomeModel
from somemodel.persistence import MODEL_FILENAME, ModelLoadError, load_model, save_model

__all__ = [
    "MODEL_FILENAME",
    "ModelLoadError",
    "SomeModel",
    "__version__",
    "load_model",
    "save_model",
]
