"""Safe persistence of scikit-learn objects with skops (never pickle).

skops trusts scikit-learn's and numpy's ordinary types on its own. The few private types a
fitted pipeline of this project also holds are listed here; a file that needs any other
type is refused before anything in it is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import skops.io as sio

#: Private scikit-learn types that the fitted TF-IDF pipeline contains.
CALIBRATED_CLASSIFIER_TYPES: frozenset[str] = frozenset(
    {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
    }
)


class UntrustedContentError(ValueError):
    """A persisted object needs a type this project does not trust."""


def save_sklearn(obj: Any, path: str | Path) -> None:
    """Write ``obj`` in skops format."""
    sio.dump(obj, path)


def load_sklearn(path: str | Path, trusted: frozenset[str]) -> Any:
    """Load a skops file, refusing any type outside skops' defaults and ``trusted``.

    Args:
        path: the file.
        trusted: type names (``module.Class``) the caller expects in this file, written out in
            code: a file can never widen its own trust.

    Raises:
        UntrustedContentError: naming the file and the types it would need.
    """
    needed = set(sio.get_untrusted_types(file=path))
    unknown = sorted(needed - trusted)
    if unknown:
        raise UntrustedContentError(f"{path}: refusing to load untrusted type(s) {unknown}")
    return sio.load(path, trusted=sorted(needed))
