"""``streamrnn stream --source stdin`` with a token model: UTF-8 text in, next-token probabilities out.

Text arrives on a file descriptor (stdin) in any chunking; an incremental UTF-8
decoder and tokenizer (``TextTokens``) turn it into tokens (a character as soon as it
is complete; a word when the whitespace after it arrives, or at the end).  Each token
goes through the model's stream (its embedding row is one frame), and one event
message per token is published to every sink (stdout, JSON lines, ZeroMQ ...)::

    {"event": "next_token", "stream": "stdin0", "frame": 17, "time": 0.42,
     "label": "s", "token": "s", "id": 12,
     "top": [["t", 0.93], ["e", 0.02], ...]}

``frame`` counts tokens from 0, ``time`` is seconds since the stream opened,
``label``/``token`` is the token just read (``<unk>`` outside the vocabulary) and
``top`` the k most probable next tokens with their probabilities, most probable
first.  The stream ends with an end-of-stream message (kind ``eos``) whose
``sample_index`` is the number of tokens.

``streamrnn.run_stream`` runs a token model through ``TextRun`` (what ``stream --source stdin``
runs for it); ``run_text_stream`` is the loop itself.
"""

from __future__ import annotations

import codecs
import os
import select
import threading
import time

from streamrnn.nn.text import model_vocab, top_k
from streamrnn.stats import Stats
from streamrnn.transport import wire

MAX_WORD_CHARS = 1024  # a "word" longer than this is cut (it reads as <unk> anyway): bounded memory


class TextTokens:
    """Incremental tokenizer: bytes in any chunking -> the tokens of the text, in order.

    >>> from streamrnn.nn.text import Vocab
    >>> t = TextTokens(Vocab("word", ["<unk>", "a"]))
    >>> t.push(b"a bi"), t.push(b"rd "), t.push(b"x", final=True)
    (['a'], ['bird'], ['x'])
    """

    def __init__(self, vocab):
        self.vocab = vocab
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # bad bytes -> U+FFFD
        self.pending = ""

    def push(self, data: bytes, final: bool = False) -> list[str]:
        text = self.decoder.decode(data, final)
        if self.vocab.kind == "char":
            return list(text)
        text = self.pending + text
        words = text.split()
        self.pending = ""
        if words and not final and not text[-1].isspace():
            self.pending = words.pop()  # the last word may go on in the next chunk
            if len(self.pending) > MAX_WORD_CHARS:
                words.append(self.pending)
                self.pending = ""
        return words


def run_text_stream(model, sinks, *, fd=None, stream_id: str = "stdin0", k: int = 5, duration: float = 0.0,
                    stop: threading.Event | None = None, stats: Stats | None = None, on_ready=None) -> Stats:
    """Read UTF-8 text from ``fd`` (default stdin) until it ends, ``duration`` s pass or ``stop`` is set;
    publish one ``next_token`` event per token to ``sinks`` (see the module doc)."""
    vocab = model_vocab(model)
    wire.check_stream_id(stream_id)
    stats = stats or Stats()
    stop = stop or threading.Event()
    fd = fd if fd is not None else 0
    tok = TextTokens(vocab)
    s = model.stream()
    opened = []
    seq = n = 0
    try:
        for sk in sinks:
            sk.open()
            opened.append(sk)
        if on_ready is not None:
            on_ready()
        t0 = time.monotonic()
        done = False
        while not done and not stop.is_set() and not (duration and time.monotonic() - t0 >= duration):
            r, _, _ = select.select([fd], [], [], 0.05)  # short timeout: signals act within 50 ms
            if not r:
                continue
            b = os.read(fd, 1 << 16)
            done = not b
            for token in tok.push(b, final=done):
                i = vocab.index.get(token, 0)
                probs = s.push(model.embed([i]))[0]
                t = time.monotonic() - t0
                meta = {"event": "next_token", "stream": stream_id, "frame": n, "time": round(t, 6),
                        "label": vocab.tokens[i], "token": vocab.tokens[i], "id": i, "top": top_k(probs, vocab, k)}
                m = wire.Message(wire.EVENT, stream_id, epoch=1, seq=seq, sample_index=n, t_capture=time.time(), meta=meta)
                for sk in sinks:
                    sk.write(m)
                seq += 1
                n += 1
                stats.count("events", "next_token")
        end = wire.Message(wire.EOS, stream_id, flags=wire.FLAG_END, epoch=1, seq=0, sample_index=n)
        for sk in sinks:
            sk.write(end)
            sk.flush()
    finally:
        for sk in opened:
            sk.close()
    return stats


class StdinText:
    """What a ``TextRun`` reads (for ``describe``, like a pipeline's source)."""

    def describe(self) -> str:
        return "UTF-8 text from stdin"


class TextRun:
    """A token model on text from stdin, run like a ``Pipeline``: ``run(stop, on_ready)`` returns the
    ``Stats``; ``on_ready(run)`` sees ``source``, ``sinks`` and ``stats``; ``summary()`` for stderr."""

    def __init__(self, model, sinks, *, stream_id: str = "stdin0", duration: float = 0.0,
                 stats: Stats | None = None, fd=None):
        self.model, self.sinks, self.stats = model, list(sinks), stats or Stats()
        self.source = StdinText()
        self.stream_id, self.duration, self.fd = stream_id, duration, fd

    def run(self, stop: threading.Event | None = None, on_ready=None) -> Stats:
        return run_text_stream(self.model, self.sinks, fd=self.fd, stream_id=self.stream_id,
                               duration=self.duration, stop=stop, stats=self.stats,
                               on_ready=None if on_ready is None else lambda: on_ready(self))

    def summary(self) -> str:
        return self.stats.summary(latency=False)  # no predictions: one event per token
