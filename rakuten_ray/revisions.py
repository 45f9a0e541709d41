"""Hub revisions: every model a run downloads from a model hub pinned to one commit.

:func:`require_pinned` refuses a config with a hub model that names no commit (the ``train`` and
``score`` commands call it unless ``--allow-unpinned`` is given). :func:`pin_revisions` asks the
Hugging Face hub for the current commit of each such model and writes it into the config file's
``revision`` keys, leaving the rest of the file, comments included, as it was written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from rakuten_ray.config import ConfigError, RunConfig, load_config
from rakuten_ray.models.spec import ModelSpec

#: The config sections that list base models, as the config file names them.
MODEL_GROUPS = ("text_models", "image_models")
PIN_COMMAND = "rakuten-ray pin-revisions"


class UnpinnedModelsError(ConfigError):
    """A config downloads models from a hub at whatever commit the hub serves that day."""


class HubLookupError(RuntimeError):
    """The hub could not say which commit a model's revision is at."""


@dataclass(frozen=True)
class Pin:
    """One hub model of a config and the commit its ``revision`` holds after pinning."""

    key: str
    repository: str
    #: The revision the config gave (``None``: the hub's default branch).
    requested: str | None
    commit: str


def _keyed_models(config: RunConfig) -> Iterator[tuple[str, ModelSpec]]:
    """Each base model with its key in messages (``text_models[minilm]``)."""
    for group in MODEL_GROUPS:
        for spec in getattr(config, group):
            yield f"{group}[{spec.name}]", spec


def unpinned(config: RunConfig) -> list[str]:
    """Why each hub model of ``config`` is not pinned to a commit, one line per model."""
    problems = (spec.check_pinned(key) for key, spec in _keyed_models(config))
    return [problem for problem in problems if problem]


def require_pinned(config: RunConfig, origin: str, remedy: str) -> None:
    """Refuse ``config`` if a hub model in it is not pinned to a commit.

    Raises:
        UnpinnedModelsError: names ``origin`` (where the config comes from) and every
            unpinned model's key, then says ``remedy`` (what to do about it).
    """
    problems = unpinned(config)
    if problems:
        listed = "".join(f"\n  {problem}" for problem in problems)
        raise UnpinnedModelsError(
            f"{origin}: hub models are not pinned to a commit:{listed}\n{remedy}"
        )


def resolve_commit(key: str, repository: str, revision: str | None) -> str:
    """The commit that ``revision`` of a hub model repository (``None``: its default branch)
    is at now, as the Hugging Face hub (``HF_ENDPOINT``) answers.

    Raises:
        HubLookupError: offline (``HF_HUB_OFFLINE``), unreachable, or the hub does not know
            the repository or the revision; names ``key``.
    """
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    wanted = f"revision {revision!r}" if revision else "default branch"
    try:
        commit = HfApi().model_info(repository, revision=revision).sha
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise HubLookupError(
            f"{key}: the hub has no {repository!r} ({wanted}): {_summary(exc)}"
        ) from exc
    except (OSError, httpx2.HTTPError) as exc:
        raise HubLookupError(
            f"{key}: cannot ask the hub which commit {repository!r} ({wanted}) is at: "
            f"{_summary(exc)}\nrun {PIN_COMMAND} where the hub can be reached"
        ) from exc
    if not commit:
        raise HubLookupError(f"{key}: the hub gave no commit for {repository!r} ({wanted})")
    return commit


def _summary(error: Exception) -> str:
    """The gist of a hub client error: its first two lines (the rest are request ids and
    advice on tokens)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:2]) or type(error).__name__


def pin_revisions(config_path: Path, out: Path | None = None) -> list[Pin]:
    """Pin each hub model of a config file to the current commit of its revision, and write
    the file to ``out`` (default: in place). Models pinned to a commit already keep it.

    Returns:
        The models pinned now, in config order.

    Raises:
        ConfigError: the config is not valid, or a hub model has no hub repository.
        HubLookupError: see :func:`resolve_commit`; nothing is written then.
    """
    config = load_config(config_path, warn_unpinned=False)
    pins = [_pin(key, spec) for key, spec in _keyed_models(config) if spec.check_pinned(key)]
    commits = {pin.key: pin.commit for pin in pins}
    text = _with_revisions(config_path.read_text(), commits)
    target = config_path if out is None else out
    staged = target.with_name(f".{target.name}.pinning")
    staged.write_text(text)
    try:
        _check_written(staged, commits)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    return pins


def _pin(key: str, spec: ModelSpec) -> Pin:
    repository = spec.hub_repository()
    if repository is None:
        raise ConfigError(f"{key}.model: {spec.hub_source()!r} has no hub repository to pin")
    requested = getattr(spec, "revision", None)
    return Pin(key, repository, requested, resolve_commit(key, repository, requested))


def _with_revisions(text: str, commits: dict[str, str]) -> str:
    """``text`` with the ``revision`` of each model keyed in ``commits`` set to its commit;
    every other character stays where it was."""
    root = yaml.compose(text)
    edits: list[tuple[int, int, str]] = []
    for group, entries in root.value:
        if group.value not in MODEL_GROUPS:
            continue
        for entry in entries.value:
            fields = {name.value: (name, value) for name, value in entry.value}
            commit = commits.get(f"{group.value}[{fields['name'][1].value}]")
            if commit is None:
                continue
            if "revision" in fields:
                value = fields["revision"][1]
                edits.append((value.start_mark.index, value.end_mark.index, _scalar(commit)))
            else:
                edits.append(_added_revision(text, entry.flow_style, *fields["model"], commit))
    # From the end backwards, so that each edit's offsets still hold.
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _added_revision(
    text: str, flow: bool, name: yaml.Node, value: yaml.Node, commit: str
) -> tuple[int, int, str]:
    """The edit that adds a ``revision`` key after an entry's ``model`` key: on the next line,
    indented alike, in a block mapping; after the value in a flow mapping."""
    scalar = _scalar(commit)
    if flow:
        return value.end_mark.index, value.end_mark.index, f", revision: {scalar}"
    line_end = text.find("\n", value.end_mark.index)
    line = f"{' ' * name.start_mark.column}revision: {scalar}\n"
    if line_end < 0:
        return len(text), len(text), f"\n{line}"
    return line_end + 1, line_end + 1, line


def _scalar(commit: str) -> str:
    """``commit`` as a YAML scalar that reads back as that string (a hash of digits only
    would read as a number unquoted)."""
    return commit if yaml.safe_load(commit) == commit else f'"{commit}"'


def _check_written(path: Path, commits: dict[str, str]) -> None:
    """The written config reads back valid, with each pinned model at its commit."""
    config = load_config(path, warn_unpinned=False)
    for key, spec in _keyed_models(config):
        if key in commits and getattr(spec, "revision", None) != commits[key]:
            raise ConfigError(f"{path}: {key}.revision did not read back as {commits[key]}")
