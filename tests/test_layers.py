"""The package's layers point one way: no module imports a module of a higher layer, and no
modules import each other in a circle. Every import counts, those inside functions and
``TYPE_CHECKING`` blocks included."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "rakuten_ray"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE

#: The top-level modules and packages of each layer, lowest first; a module may import its
#: own layer and the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("catalog", "text", "images", "layout", "hashing", "safe_io", "batching", "metrics",
     "splits", "lifecycle", "ray_session", "data", "storage"),
    ("models",),
    ("config",),
    ("fusion", "bundle", "revisions"),
    ("training", "scoring"),
    ("serving", "evaluation", "audit", "inspection", "plots", "synthetic", "synthetic_text",
     "synthetic_images"),
    ("cli", "demo"),
)  # fmt: skip
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


@dataclass(frozen=True)
class Import:
    """One import of a package module, where it is written."""

    module: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.target}"


def module_name(path: Path) -> str:
    """The dotted name of a file of the package."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def imports_of(module: str, source: str, known: set[str], is_package: bool = False) -> list[Import]:
    """The package modules that ``source`` (the text of ``module``) imports, anywhere in it.

    ``from a import b`` counts as an import of ``a.b`` where that is a module in ``known``,
    else of ``a``; relative imports are resolved against ``module``'s package.
    """
    found: set[Import] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        found |= {
            Import(module, target, node.lineno)
            for target in targets
            if target == PACKAGE or target.startswith(f"{PACKAGE}.")
        }
    return sorted(found, key=lambda found: (found.line, found.target))


def layer(module: str) -> int | None:
    """The layer of a package module (the package's own ``__init__`` is the lowest)."""
    if module == PACKAGE:
        return 0
    return LAYER_OF.get(module.split(".")[1])


def upward(imports: list[Import]) -> list[str]:
    """The imports of a module of a higher layer, described."""
    return [
        f"{found} (layer {layer(found.target)} > layer {layer(found.module)})"
        for found in imports
        if layer(found.module) is not None
        and layer(found.target) is not None
        and layer(found.target) > layer(found.module)
    ]


def circle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports in ``graph`` (module -> modules it imports), or ``[]``."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        for target in sorted(graph.get(module, ())):
            found = visit(target, [*path, module])
            if found:
                return found
        done.add(module)
        return []

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return []


@pytest.fixture(scope="module")
def package_imports() -> list[Import]:
    modules = package_modules()
    known = set(modules)
    return [
        found
        for module, path in modules.items()
        for found in imports_of(module, path.read_text(), known, path.name == "__init__.py")
    ]


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(module for module in package_modules() if layer(module) is None)
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_no_module_imports_a_higher_layer(package_imports: list[Import]) -> None:
    offences = upward(package_imports)
    assert not offences, "imports of a higher layer:\n" + "\n".join(offences)


def test_no_modules_import_each_other_in_a_circle(package_imports: list[Import]) -> None:
    graph: dict[str, set[str]] = {}
    for found in package_imports:
        if found.target != found.module:
            graph.setdefault(found.module, set()).add(found.target)
    found = circle(graph)
    assert not found, "import circle: " + " -> ".join(found)


def test_the_check_sees_imports_inside_functions_and_type_checking_blocks() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from rakuten_ray.config import RunConfig\n"
        "def fit():\n"
        "    import rakuten_ray.training.deep\n"
        "    from . import registry\n"
        "    from ..catalog import LABEL_COLUMN\n"
    )
    known = {"rakuten_ray.models.registry", "rakuten_ray.training.deep", "rakuten_ray.catalog"}
    imports = imports_of("rakuten_ray.models.kind", source, known)
    assert [(i.target, i.line) for i in imports] == [
        ("rakuten_ray.config", 3),
        ("rakuten_ray.training.deep", 5),
        ("rakuten_ray.models.registry", 6),
        ("rakuten_ray.catalog", 7),
    ]
    assert upward(imports) == [
        "rakuten_ray.models.kind (line 3) imports rakuten_ray.config (layer 2 > layer 1)",
        "rakuten_ray.models.kind (line 5) imports rakuten_ray.training.deep (layer 4 > layer 1)",
    ]
    assert circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert circle({"a": {"b"}, "b": {"c"}}) == []
