"""No code path of the package deserialises with pickle; skops files are loaded on a whitelist."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import skops.io as sio
from helpers import REPO_ROOT
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from rakuten_ray.safe_io import UntrustedContentError, load_sklearn, save_sklearn

PACKAGE_DIR = REPO_ROOT / "rakuten_ray"
#: The one module allowed to call ``skops.io.load`` (it checks the types first).
SAFE_IO = PACKAGE_DIR / "safe_io.py"

#: Calls that unpickle whatever they are given.
ALWAYS_UNSAFE = frozenset(
    {
        "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
        "cPickle.load", "cPickle.loads", "dill.load", "dill.loads", "cloudpickle.load",
        "cloudpickle.loads", "joblib.load", "sklearn.externals.joblib.load",
        "pandas.read_pickle", "numpy.load", "torch.load", "skops.io.load", "skops.io.loads",
    }
)  # fmt: skip


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> fully qualified name, from the module's imports (anywhere in it)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attribute accesses on a name, else ``None``."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in call.keywords
    )


def _unsafe_reason(qualified: str, call: ast.Call, allow_skops: bool) -> str | None:
    if qualified == "torch.load":
        safe = _keyword_is(call, "weights_only", True)
        return None if safe else "torch.load without weights_only=True"
    if qualified == "numpy.load":
        loose = any(
            k.arg == "allow_pickle" and not _keyword_is(call, "allow_pickle", False)
            for k in call.keywords
        )
        return "numpy.load with allow_pickle" if loose else None
    if qualified.startswith("skops.io.") and allow_skops:
        return None
    return f"{qualified} (unpickles its input)" if qualified in ALWAYS_UNSAFE else None


def unsafe_calls(source: str, filename: str, allow_skops: bool = False) -> list[str]:
    """Every call in ``source`` that could deserialise untrusted code, as ``file:line: why``."""
    tree = ast.parse(source, filename=filename)
    names = _aliases(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        dotted = _dotted(node.func)
        if dotted is None:
            continue
        head, _, rest = dotted.partition(".")
        qualified = names.get(head, head) + (f".{rest}" if rest else "")
        reason = _unsafe_reason(qualified, node, allow_skops)
        if reason:
            found.append((node.lineno, f"{filename}:{node.lineno}: {reason}"))
    return [message for _, message in sorted(found)]


def test_scanner_finds_each_forbidden_form() -> None:
    """The scanner itself flags every forbidden form, whatever the import style."""
    source = "\n".join(
        [
            "import pickle, joblib, torch",
            "import numpy as np",
            "import pandas as pd",
            "import skops.io as sio",
            "from pickle import loads as unpickle",
            "from skops.io import load",
            "pickle.load(f)",
            "unpickle(b)",
            "joblib.load('m')",
            "torch.load('w')",
            "torch.load('w', weights_only=False)",
            "np.load('a', allow_pickle=True)",
            "pd.read_pickle('p')",
            "sio.load('s')",
            "load('s')",
            # Allowed forms:
            "torch.load('w', map_location='cpu', weights_only=True)",
            "np.load('a')",
            "np.load('a', allow_pickle=False)",
            "pd.read_parquet('p')",
        ]
    )
    found = unsafe_calls(source, "sample.py")
    assert [int(line.split(":")[1]) for line in found] == list(range(7, 16))
    assert unsafe_calls(source, "sample.py", allow_skops=True) == found[:-2]


def test_package_never_unpickles() -> None:
    """No module of ``rakuten_ray`` calls a pickle-based loader (skops only via safe_io)."""
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    assert SAFE_IO in files and len(files) > 20
    found = [
        problem
        for path in files
        for problem in unsafe_calls(
            path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE_DIR.parent)),
            allow_skops=path == SAFE_IO,
        )
    ]  # fmt: skip
    assert found == []


class Gadget:
    """A type no project file should ever need."""

    def __init__(self) -> None:
        self.payload = "echo owned"


@pytest.mark.parametrize(
    ("obj", "bad_type"),
    [
        (Pipeline([("run", FunctionTransformer(func=os.system))]), f"{os.name}.system"),
        (Gadget(), "Gadget"),
    ],
    ids=["function-transformer-os-system", "custom-class"],
)
def test_load_sklearn_refuses_untrusted_types(tmp_path: Path, obj: object, bad_type: str) -> None:
    """A file needing a type outside skops' defaults and the caller's list is refused."""
    path = tmp_path / "model.skops"
    sio.dump(obj, path)
    with pytest.raises(UntrustedContentError, match=bad_type) as caught:
        load_sklearn(path, frozenset({"sklearn.calibration._SigmoidCalibration"}))
    assert str(path) in str(caught.value)


def test_load_sklearn_accepts_trusted_content(tmp_path: Path) -> None:
    """An ordinary fitted estimator round-trips, and ``trusted`` can widen the defaults."""
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    path = tmp_path / "lr.skops"
    save_sklearn(model, path)
    loaded = load_sklearn(path, frozenset())
    assert type(loaded) is LogisticRegression
    assert loaded.predict([[0.0], [3.0]]).tolist() == [0, 1]

    gadget_path = tmp_path / "gadget.skops"
    sio.dump(Gadget(), gadget_path)
    needed = frozenset(sio.get_untrusted_types(file=gadget_path))
    assert load_sklearn(gadget_path, needed).payload == "echo owned"
