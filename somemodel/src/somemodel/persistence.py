"""Save and load a fitted :class:`SomeModel` with skops instead of pickle.

Loading a pickle runs whatever code the file tells the unpickler to run, so a
tampered or foreign model file would execute arbitrary code on the machine that
loads it. skops stores the object graph as data and refuses to build any type
that was not explicitly trusted, so a model file can only ever produce the types
listed in :data:`TRUSTED_TYPES`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import skops.io as sio

from somemodel.models import SomeModel

# Exactly what ``skops.io.get_untrusted_types`` reports for a fitted SomeModel: the
# scaler, logistic regression and numpy arrays inside it are trusted by skops
# already. A test recomputes this list from a freshly fitted model, so a change to
# SomeModel's attributes that needs a new type fails loudly instead of silently
# widening what a model file may contain.
TRUSTED_TYPES: tuple[str, ...] = ("somemodel.models.SomeModel",)


class ModelLoadError(ValueError):
    """A model file is missing, unreadable, or contains types that are not trusted."""


def save_model(model: SomeModel, path: str | Path) -> None:
    """Write ``model`` to ``path`` in the skops format."""
    if not isinstance(model, SomeModel):
        raise TypeError(f"save_model expects a SomeModel, got {type(model).__name__}")
    sio.dump(model, Path(path))


def load_model(path: str | Path) -> SomeModel:
    """Load a SomeModel saved by :func:`save_model`, trusting only :data:`TRUSTED_TYPES`.

    Raises :class:`ModelLoadError` when the file does not exist, is not a skops
    file, holds any type outside the trusted list, or does not hold a SomeModel.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not a readable skops model file: {exc}") from exc
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise ModelLoadError(
            f"{path} contains types that are not trusted: {', '.join(unexpected)}; "
            f"only {', '.join(TRUSTED_TYPES)} (plus skops' own safe defaults) may be loaded"
        )
    model = sio.load(path, trusted=list(TRUSTED_TYPES))
    if not isinstance(model, SomeModel):
        raise ModelLoadError(f"{path} holds a {type(model).__name__}, not a SomeModel")
    return model
