"""Text data for next-token training (``data.kind = "text"``).

UTF-8 text files (one ``.txt`` file, or every ``*.txt`` of a folder, sorted by name) become
token ids (characters or whitespace-separated words, ``streamrnn.nn.text.Vocab``), then
training sequences of ``seq_len`` tokens::

    Sequence(x = ids[k : k + n] as (n, 1) float32,   # the token read at each step
             y = ids[k + 1 : k + n + 1] (n,) int64,  # the token that follows it: the class to predict
             mask = ones(n))

so next-token prediction is the ``frame`` task with the ``ce`` loss: the existing lanes and
TBPTT runner train it unchanged, and the model's embedding turns each id into the frame the
recurrent layers see.  The vocabulary is the ``max_vocab - 1`` most frequent tokens of the
training files (ties broken by the token's text) plus ``<unk>`` (id 0) for everything else.

>>> import tempfile, os
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "a.txt")
>>> _ = open(p, "w", encoding="utf-8").write("abracadabra")
>>> vocab = build_vocab(read_texts(p), "char", 4)
>>> vocab.tokens, [s.x.shape for s in text_sequences(read_texts(p), vocab, 6)]
(['<unk>', 'a', 'b', 'r'], [(6, 1), (4, 1)])
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from streamrnn.config import read_text_file
from streamrnn.errors import ConfigError
from streamrnn.nn.text import UNK, Vocab
from streamrnn.train.data import Sequence

MAX_TEXT_BYTES = 256 * 2**20  # the ids of a corpus this size already take 2 GiB as int64


def read_texts(path) -> list[tuple[str, str]]:
    """[(file name, text)] of one UTF-8 file or every ``*.txt`` in a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ConfigError(f"{path}: no .txt files")
    elif path.exists():
        files = [path]
    else:
        raise ConfigError(f"{path}: no such text file or folder")
    total = sum(f.stat().st_size for f in files if f.is_file())
    if total > MAX_TEXT_BYTES:
        raise ConfigError(f"{path}: {total} bytes of text, above the limit of {MAX_TEXT_BYTES} bytes")
    # regular files only (a FIFO named x.txt never ends), each re-checked against the cap as read
    return [(str(f), read_text_file(f, MAX_TEXT_BYTES, "text file")) for f in files]


def build_vocab(texts, kind: str, max_size: int) -> Vocab:
    """``<unk>`` plus the ``max_size - 1`` most frequent tokens of ``texts`` (ties: by token text)."""
    v = Vocab(kind, [UNK])
    counts = Counter(t for _, text in texts for t in v.split(text))
    counts.pop(UNK, None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_size - 1]
    return Vocab(kind, [UNK] + [t for t, _ in ranked])


def text_sequences(texts, vocab: Vocab, seq_len: int) -> list[Sequence]:
    """Training sequences of up to ``seq_len`` steps (see the module doc); a file's last piece may be shorter."""
    out = []
    for name, text in texts:
        ids = np.array(vocab.encode(text), np.int64)
        for k in range(0, max(len(ids) - 1, 0), seq_len):
            piece = ids[k:k + seq_len + 1]
            n = len(piece) - 1
            if n < 1:
                continue
            out.append(Sequence(piece[:-1, None].astype(np.float32), piece[1:].copy(), np.ones(n, np.float32),
                                f"{name}:{k}"))
    if not out:
        raise ConfigError(f"no text sequences: the files hold fewer than 2 tokens ({', '.join(n for n, _ in texts)})")
    return out


def unigram_perplexity(train, valid, vocab_size: int) -> float:
    """Perplexity on ``valid`` of the unigram model of ``train``'s targets (add-one smoothing):
    the baseline a next-token model must beat by using its context."""
    counts = np.ones(vocab_size)
    for s in train:
        counts += np.bincount(s.y, weights=s.mask, minlength=vocab_size)
    logp = np.log(counts / counts.sum())
    nll = sum(float(-(logp[s.y] * s.mask).sum()) for s in valid)
    n = sum(float(s.mask.sum()) for s in valid)
    return math.exp(nll / n) if n else float("nan")
