"""Token models: the vocabulary, tokenising, next-token probabilities and generation.

A token model (a model file with ``embedding.weight`` and a ``vocab`` metadata entry, see
docs/model-format.md) reads one token id per step: the id selects a row of the embedding
(PyTorch's ``nn.Embedding``), the row goes through the recurrent layers as a frame would,
and the softmax head gives the probability of every token of the vocabulary being next.

Tokens are either characters (``"char"``: every Unicode character, newlines included) or
whitespace-separated words (``"word"``: ``str.split()``).  Id 0 is ``"<unk>"``: any token
outside the vocabulary reads as it.

>>> v = Vocab("word", ["<unk>", "the", "cat"])
>>> v.encode("the dog the cat"), v.decode([1, 2])
([1, 0, 1, 2], 'the cat')
"""

from __future__ import annotations

import numpy as np

from streamrnn.errors import InputError, ModelFileError

UNK = "<unk>"
KINDS = ("char", "word")
MAX_VOCAB = 1 << 20  # ids and the softmax head stay far below memory limits


class Vocab:
    """Tokens in id order (``tokens[0]`` is ``"<unk>"``) and how text splits into them."""

    def __init__(self, kind: str, tokens):
        if kind not in KINDS:
            raise InputError(f"vocabulary kind must be one of {', '.join(KINDS)}, got {kind!r}")
        tokens = list(tokens)
        if not tokens or tokens[0] != UNK:
            raise InputError(f"the first token of a vocabulary must be {UNK!r}, got {tokens[:1]!r}")
        if len(set(tokens)) != len(tokens):
            raise InputError("vocabulary tokens must be unique")
        self.kind, self.tokens = kind, tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    def __len__(self):
        return len(self.tokens)

    def split(self, text: str) -> list[str]:
        """Text -> tokens: characters, or whitespace-separated words."""
        return list(text) if self.kind == "char" else text.split()

    def encode(self, text: str) -> list[int]:
        """Text -> token ids (unknown tokens -> 0, ``<unk>``)."""
        return [self.index.get(t, 0) for t in self.split(text)]

    def decode(self, ids) -> str:
        """Token ids -> text (characters joined as they are, words with single spaces)."""
        return ("" if self.kind == "char" else " ").join(self.tokens[int(i)] for i in ids)

    def join(self, prompt: str, continuation: str) -> str:
        """The prompt followed by a decoded continuation (a space between words)."""
        if self.kind == "word" and prompt and continuation and not prompt[-1].isspace():
            return prompt + " " + continuation
        return prompt + continuation

    def to_meta(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.tokens)}

    @classmethod
    def from_meta(cls, meta, vocab_size: int, where="model") -> "Vocab":
        """Validate a model file's ``vocab`` entry against the embedding's row count."""
        if not isinstance(meta, dict) or not isinstance(meta.get("tokens"), list) \
                or not all(isinstance(t, str) for t in meta["tokens"]):
            raise ModelFileError(f"{where}: metadata 'vocab' must be an object with a list of strings 'tokens'")
        if len(meta["tokens"]) != vocab_size:
            raise ModelFileError(f"{where}: vocab has {len(meta['tokens'])} tokens but embedding.weight has "
                                 f"{vocab_size} rows")
        try:
            return cls(meta.get("kind"), meta["tokens"])
        except InputError as e:
            raise ModelFileError(f"{where}: metadata 'vocab': {e}") from None


def model_vocab(model) -> Vocab:
    """The vocabulary of a token model; InputError for a model that reads frames."""
    v = model.extra_meta.get("vocab")
    if model.arch.vocab_size is None or v is None:
        raise InputError(f"model {model.name!r} reads feature frames, not tokens (no embedding and vocabulary)")
    return Vocab(v["kind"], v["tokens"])


def _check_text_model(model, vocab: Vocab):
    if model.activation != "softmax" or model.output_size != len(vocab):
        raise InputError(f"model {model.name!r} needs a softmax head over its {len(vocab)} tokens to predict the "
                         f"next one (head: {model.output_size} outputs, {model.activation})")


def next_token_probs(model, text: str, stream=None) -> np.ndarray:
    """Probabilities (V,) of the token after ``text`` (pushed through ``stream``, or a new one).

    >>> import streamrnn
    >>> from streamrnn.nn.cells import Architecture, init_tensors
    >>> arch = Architecture("gru", 4, 8, 1, 3, "softmax", vocab_size=3)
    >>> m = streamrnn.Model(arch, init_tensors(arch, np.random.default_rng(0)),
    ...                     extra_meta={"vocab": {"kind": "char", "tokens": ["<unk>", "a", "b"]}})
    >>> p = next_token_probs(m, "abba")
    >>> p.shape, round(float(p.sum()), 5)
    ((3,), 1.0)
    """
    vocab = model_vocab(model)
    _check_text_model(model, vocab)
    ids = vocab.encode(text)
    if not ids:
        raise InputError("the text has no tokens: give at least one character (or word)")
    s = stream if stream is not None else model.stream()
    return np.asarray(s.push(model.embed(ids))[-1], np.float64)


def continuation_probability(model, prompt: str, continuation: str) -> float:
    """P(continuation | prompt): the product of the next-token probabilities of its tokens."""
    vocab = model_vocab(model)
    s = model.stream()
    p = next_token_probs(model, prompt, s)
    total = 1.0
    ids = vocab.encode(continuation)
    for k, i in enumerate(ids):
        total *= float(p[i])
        if k + 1 < len(ids):
            p = np.asarray(s.push(model.embed([i]))[-1], np.float64)
    return total


def top_k(probs, vocab: Vocab, k: int) -> list[list]:
    """[[token, p], ...] of the k most probable tokens, most probable first (ties: lower id)."""
    order = np.argsort(-np.asarray(probs), kind="stable")[:k]
    return [[vocab.tokens[int(i)], round(float(probs[int(i)]), 6)] for i in order]


def generate(model, prompt: str, n_tokens: int = 100, temperature: float = 1.0, seed: int | None = None) -> str:
    """Continue ``prompt`` by ``n_tokens`` tokens drawn from the model; returns the continuation only.

    ``temperature`` scales the log-probabilities (p^(1/T), renormalised); 0 picks the most
    probable token every step (greedy).  ``seed`` makes the draw repeatable.
    """
    if not 0 <= n_tokens <= 1_000_000:
        raise InputError(f"n_tokens must be in [0, 1000000], got {n_tokens}")
    if not temperature >= 0 or temperature == float("inf"):
        raise InputError(f"temperature must be a finite number >= 0, got {temperature}")
    vocab = model_vocab(model)
    rng = np.random.default_rng(seed)
    s = model.stream()
    p = next_token_probs(model, prompt, s)
    out = []
    for _ in range(n_tokens):
        if temperature == 0:
            i = int(np.argmax(p))
        else:
            logp = np.log(np.maximum(p, 1e-30)) / temperature
            q = np.exp(logp - logp.max())
            i = int(rng.choice(len(q), p=q / q.sum()))
        out.append(i)
        p = np.asarray(s.push(model.embed([i]))[-1], np.float64)
    return vocab.decode(out)
