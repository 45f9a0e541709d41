"""Tiny models of the production architectures, built locally (no hub is reachable).

CamemBERT and XLM-R are RoBERTa-family encoders with a SentencePiece-style Unigram tokenizer
(no ``token_type_ids``, ``<s>``/``</s>`` framing, their own two-layer classification head);
here each gets a Unigram tokenizer trained on the test's own text and a 2-layer encoder of
hidden size 32, saved with ``save_pretrained`` as the hub's folders are. ConvNeXt and Swin
are the production timm architectures with small ``model_args``, randomly initialised and
saved as safetensors, loaded through the config's ``pretrained`` file path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: A ConvNeXt of the production name (``convnext_base``), four stages of one block each.
TINY_CONVNEXT_ARGS = {"dims": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}
#: A Swin of the production name for 32-pixel images: two stages, 4-patch windows.
TINY_SWIN_ARGS = {
    "img_size": 32, "window_size": 4, "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2],
}  # fmt: skip
TINY_IMAGE_SIZE = 32
#: Longest text the tiny encoders read, in tokens (their position table is 2 longer: RoBERTa
#: counts positions from the padding index).
TINY_MAX_LENGTH = 32
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def unigram_tokenizer(texts: Iterable[str], tokenizer_class: type, vocab_size: int = 400):
    """A fast tokenizer of ``tokenizer_class`` over a Unigram model trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=ROBERTA_SPECIALS, unk_token="<unk>"
    )
    backend.train_from_iterator(texts, trainer)
    return tokenizer_class(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    )  # fmt: skip


def write_tiny_roberta(folder: Path, family: str, texts: list[str], seed: int = 0) -> Path:
    """A tiny ``camembert`` or ``xlm-roberta`` encoder (weights drawn with ``seed``) and its
    tokenizer, in a folder that ``from_pretrained`` reads as it reads the hub's."""
    import torch
    from transformers import (
        CamembertConfig,
        CamembertModel,
        CamembertTokenizerFast,
        XLMRobertaConfig,
        XLMRobertaModel,
        XLMRobertaTokenizerFast,
    )

    classes = {
        "camembert": (CamembertTokenizerFast, CamembertConfig, CamembertModel),
        "xlm-roberta": (XLMRobertaTokenizerFast, XLMRobertaConfig, XLMRobertaModel),
    }
    tokenizer_class, config_class, model_class = classes[family]
    tokenizer = unigram_tokenizer(texts, tokenizer_class)
    config = config_class(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=TINY_MAX_LENGTH + 2,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_timm(path: Path, arch: str, model_args: dict, seed: int = 0) -> Path:
    """A randomly initialised timm model's full state dict, as a safetensors file."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **model_args)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


@dataclass(frozen=True)
class TinyProductionModels:
    """Local stand-ins for the production config's four deep models."""

    camembert: Path
    xlm_roberta: Path
    convnext: Path
    swin: Path

    @classmethod
    def build(cls, folder: Path, texts: list[str]) -> TinyProductionModels:
        folder.mkdir(parents=True, exist_ok=True)
        return cls(
            camembert=write_tiny_roberta(folder / "camembert", "camembert", texts),
            xlm_roberta=write_tiny_roberta(folder / "xlm_roberta", "xlm-roberta", texts),
            convnext=write_tiny_timm(
                folder / "convnext.safetensors", "convnext_base", TINY_CONVNEXT_ARGS
            ),
            swin=write_tiny_timm(
                folder / "swin.safetensors", "swin_base_patch4_window7_224", TINY_SWIN_ARGS
            ),
        )

    def overrides(self) -> list[str]:
        """``--set`` overrides that point ``configs/production.yaml`` at these models and size
        it for a 2-CPU test: its kinds and recipes (linear and cosine schedules, warmup, label
        smoothing, the frozen-backbone SGD head warm-up, backbone learning-rate scale) stay.

        CamemBERT and ConvNeXt train with 2 Ray Train workers (DDP on gloo), the others with
        one; the tiny random models get a learning rate they learn from in two epochs.
        """
        one_cpu = "{use_gpu: false, gpus_per_worker: 0, cpus_per_worker: 1, max_failures: 0"
        text = {"camembert_large": (self.camembert, 2), "xlm_roberta": (self.xlm_roberta, 1)}
        image = {
            "convnext_base": (self.convnext, TINY_CONVNEXT_ARGS, 2),
            "swin_base": (self.swin, TINY_SWIN_ARGS, 1),
        }
        sets = ["text_models.tfidf_svm.scaling.cpus_per_worker=1", "fusion.cv_folds=3"]
        for name, (folder, workers) in text.items():
            key = f"text_models.{name}"
            sets += [
                f"{key}.model={folder}", f"{key}.revision=null",
                f"{key}.max_length={TINY_MAX_LENGTH}",
                f"{key}.train.epochs=2", f"{key}.train.batch_size=16",
                f"{key}.train.eval_batch_size=64", f"{key}.train.learning_rate=2e-3",
                f"{key}.train.loader_workers=0",
                f"{key}.scaling={one_cpu}, num_workers: {workers}}}",
            ]  # fmt: skip
        for name, (weights, args, workers) in image.items():
            key = f"image_models.{name}"
            sets += [
                f"{key}.pretrained={weights}", f"{key}.revision=null",
                f"{key}.model_args={args}", f"{key}.image_size={TINY_IMAGE_SIZE}",
                f"{key}.train.epochs=2", f"{key}.train.batch_size=16",
                f"{key}.train.eval_batch_size=64", f"{key}.train.loader_workers=0",
                f"{key}.scaling={one_cpu}, num_workers: {workers}}}",
            ]  # fmt: skip
        return sets + [
            "scoring.text={pool_size: 1, num_cpus: 0.4, num_gpus: 0, batch_size: 64, "
            "micro_batch_size: 16}",
            "scoring.image_prep={pool_size: 1, num_cpus: 0.3, num_gpus: 0, batch_size: 32}",
            "scoring.image={pool_size: 1, num_cpus: 0.5, num_gpus: 0, batch_size: 32, "
            "micro_batch_size: 8}",
            "scoring.fusion={pool_size: 1, num_cpus: 0.1, num_gpus: 0, batch_size: 64, "
            "micro_batch_size: 64}",
        ]
