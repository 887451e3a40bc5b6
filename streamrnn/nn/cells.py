"""Cell types, their equations, gate layout and the packed parameter layout.

The equations, gate order and weight layout are PyTorch's (``nn.RNN``,
``nn.GRU``, ``nn.LSTM``), so a state_dict moves between the two unchanged::

    rnn_tanh: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    rnn_relu: h' = relu(W_ih x + b_ih + W_hh h + b_hh)
    gru:      r = s(W_ir x + b_ir + W_hr h + b_hr)          gates (r, z, n)
              z = s(W_iz x + b_iz + W_hz h + b_hz)
              n = tanh(W_in x + b_in + r * (W_hn h + b_hn))  # reset applied after W_hn h, as cuDNN
              h' = (1 - z) * n + z * h
    lstm:     i, f, g, o = s(.), s(.), tanh(.), s(.)         gates (i, f, g, o)
              c' = f * c + i * g
              h' = o * tanh(c')

Inside streamrnn every parameter lives in one flat vector ``theta`` (the
"packed" layout).  Weight matrices are stored *transposed* there, (in, G*H),
so the kernels run the matrix products as unit-stride row updates that
vectorise without reassociating any sum (see ``kernels.py``).  The model file
and ``Model.tensors()`` always use PyTorch's untransposed layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Integer codes the kernels branch on.
RNN_TANH, RNN_RELU, GRU, LSTM = 0, 1, 2, 3
CELL_CODES = {"rnn_tanh": RNN_TANH, "rnn_relu": RNN_RELU, "gru": GRU, "lstm": LSTM}
N_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}

# Head activations.
ACT_IDENTITY, ACT_SIGMOID, ACT_SOFTMAX = 0, 1, 2
ACT_CODES = {"identity": ACT_IDENTITY, "sigmoid": ACT_SIGMOID, "softmax": ACT_SOFTMAX}

# Per-step values the forward kernel saves for backpropagation, per layer and
# lane, as multiples of H (``save`` has shape (L, T, B, SAVE_WIDTH[cell] * H)):
#   rnn:  [h_t]
#   gru:  [r, z, n, ghn, h_t]       ghn = W_hn h_{t-1} + b_hn (before r is applied)
#   lstm: [i, f, g, o, c_t, h_t]
SAVE_WIDTH = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 5, "lstm": 6}


@dataclass(frozen=True)
class Architecture:
    """Shapes and options that fix a model's parameter set."""

    cell: str
    input_size: int  # I: features per frame
    hidden_size: int  # H
    num_layers: int = 1  # L
    output_size: int | None = None  # O: head outputs, None for no head
    activation: str = "identity"  # head activation
    has_norm: bool = False  # input normalisation (x - mean) / std
    vocab_size: int | None = None  # V: token ids in, looked up in embedding.weight (V, I); None: frames in
    bidirectional: bool = False  # PyTorch's bidirectional=True: a reverse direction per layer, outputs concatenated

    def __post_init__(self):
        # Internal invariants; user-facing validation happens in the loaders.
        assert self.cell in CELL_CODES, self.cell
        assert self.activation in ACT_CODES, self.activation
        assert self.vocab_size is None or not self.has_norm, "token inputs take no input normalisation"
        assert self.vocab_size is None or not self.bidirectional, "a token model is causal, never bidirectional"

    @property
    def gates(self) -> int:
        return N_GATES[self.cell]

    @property
    def directions(self) -> int:
        """2 for a bidirectional model, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def top_size(self) -> int:
        """Width of the top layer's output, the head's input: H, or 2H bidirectional (both directions)."""
        return self.directions * self.hidden_size

    @property
    def out_size(self) -> int:
        """Width of the model output: the head's O, or the top layer's output without a head."""
        return self.output_size if self.output_size is not None else self.top_size

    def layer_input(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.top_size

    def suffixes(self) -> tuple[str, ...]:
        """PyTorch's tensor-name suffix of each direction: ("",) or ("", "_reverse")."""
        return ("", "_reverse")[: self.directions]

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """PyTorch-named tensors and their shapes, in file order (PyTorch's state_dict order)."""
        G, H = self.gates, self.hidden_size
        shapes: dict[str, tuple[int, ...]] = {}
        for k in range(self.num_layers):
            for sfx in self.suffixes():
                shapes[f"rnn.weight_ih_l{k}{sfx}"] = (G * H, self.layer_input(k))
                shapes[f"rnn.weight_hh_l{k}{sfx}"] = (G * H, H)
                shapes[f"rnn.bias_ih_l{k}{sfx}"] = (G * H,)
                shapes[f"rnn.bias_hh_l{k}{sfx}"] = (G * H,)
        if self.output_size is not None:
            shapes["head.weight"] = (self.output_size, self.top_size)
            shapes["head.bias"] = (self.output_size,)
        if self.has_norm:
            shapes["norm.mean"] = (self.input_size,)
            shapes["norm.std"] = (self.input_size,)
        if self.vocab_size is not None:
            shapes["embedding.weight"] = (self.vocab_size, self.input_size)  # PyTorch nn.Embedding
        return shapes

    def n_params(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.tensor_shapes().values()))


class PackedLayout:
    """Where each tensor sits in the flat parameter vector ``theta``.

    ``offsets`` (L * D, 4) int64: start of w_ih^T (I_l, G*H), w_hh^T (H, G*H),
    b_ih (G*H,), b_hh (G*H,) for each layer (D = 2 directions for a bidirectional
    model: row 2l is layer l's forward direction, row 2l + 1 its reverse; the four
    tensors of one row are contiguous in theta).  ``extra`` (4,) int64: start of
    head w^T (D*H, O), head b (O,), norm mean (I,), norm std (I,), or -1.
    ``embedding`` is the start of ``embedding.weight`` (V, I), or -1: the kernels never
    read it (token ids become frames before the forward kernel, ``embed``), so it sits
    after everything the kernels index.
    """

    def __init__(self, arch: Architecture):
        self.arch = arch
        G, H, L = arch.gates, arch.hidden_size, arch.num_layers
        self.offsets = np.zeros((L * arch.directions, 4), dtype=np.int64)
        self.extra = np.full(4, -1, dtype=np.int64)
        # name -> (offset, packed shape, transposed?)
        self.entries: dict[str, tuple[int, tuple[int, ...], bool]] = {}
        pos = 0

        def take(name, shape, transposed, slot):
            nonlocal pos
            self.entries[name] = (pos, shape, transposed)
            slot(pos)
            pos += int(np.prod(shape))

        for k in range(L):
            Ik = arch.layer_input(k)
            for d, sfx in enumerate(arch.suffixes()):
                row = k * arch.directions + d
                for j, (nm, shape, tr) in enumerate(((f"weight_ih_l{k}", (Ik, G * H), True),
                                                     (f"weight_hh_l{k}", (H, G * H), True),
                                                     (f"bias_ih_l{k}", (G * H,), False),
                                                     (f"bias_hh_l{k}", (G * H,), False))):
                    take(f"rnn.{nm}{sfx}", shape, tr, lambda p, row=row, j=j: self.offsets.__setitem__((row, j), p))
        if arch.output_size is not None:
            take("head.weight", (arch.top_size, arch.output_size), True, lambda p: self.extra.__setitem__(0, p))
            take("head.bias", (arch.output_size,), False, lambda p: self.extra.__setitem__(1, p))
        if arch.has_norm:
            take("norm.mean", (arch.input_size,), False, lambda p: self.extra.__setitem__(2, p))
            take("norm.std", (arch.input_size,), False, lambda p: self.extra.__setitem__(3, p))
        self.embedding = -1
        if arch.vocab_size is not None:
            take("embedding.weight", (arch.vocab_size, arch.input_size), False,
                 lambda p: setattr(self, "embedding", p))
        self.size = pos

    def view(self, theta: np.ndarray, name: str) -> np.ndarray:
        """The packed (possibly transposed) view of one tensor inside theta."""
        off, shape, _ = self.entries[name]
        return theta[off : off + int(np.prod(shape))].reshape(shape)

    def pack(self, tensors: dict[str, np.ndarray], dtype=np.float32) -> np.ndarray:
        """PyTorch-layout tensors -> flat theta."""
        theta = np.empty(self.size, dtype=dtype)
        for name, (_, _, transposed) in self.entries.items():
            t = np.asarray(tensors[name])
            self.view(theta, name)[...] = t.T if transposed else t
        return theta

    def embed(self, theta: np.ndarray, ids) -> np.ndarray:
        """Embedding rows of token ids: ids (...) int -> (..., I) (a copy), as ``nn.Embedding``."""
        return self.view(theta, "embedding.weight")[ids]

    def unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Flat theta -> PyTorch-layout tensors (copies)."""
        out = {}
        for name, (_, _, transposed) in self.entries.items():
            v = self.view(theta, name)
            out[name] = np.ascontiguousarray(v.T if transposed else v)
        return out


def init_tensors(arch: Architecture, rng: np.random.Generator, scheme: str = "pytorch") -> dict[str, np.ndarray]:
    """Fresh float64 tensors for ``arch``.

    ``"pytorch"``: every weight and bias U(-1/sqrt(H), 1/sqrt(H)), PyTorch's default.
    ``"glorot"``: Glorot-uniform input weights, orthogonal recurrent weights (per
    gate block), zero biases except the LSTM forget gate (bias_ih = 1), the
    initialisation the trainer uses to keep early gradients from exploding or vanishing.
    """
    G, H = arch.gates, arch.hidden_size
    out: dict[str, np.ndarray] = {}
    for name, shape in arch.tensor_shapes().items():
        if name.startswith("norm."):
            out[name] = np.zeros(shape) if name == "norm.mean" else np.ones(shape)
            continue
        if name == "embedding.weight":  # N(0, 1) as nn.Embedding, under either scheme
            out[name] = rng.standard_normal(shape)
            continue
        if scheme == "pytorch":
            fan = H if name.startswith("rnn.") else shape[-1]
            k = 1.0 / np.sqrt(fan)
            out[name] = rng.uniform(-k, k, size=shape)
            continue
        if scheme != "glorot":
            raise ValueError(f"unknown init scheme {scheme!r}; expected 'pytorch' or 'glorot'")
        if "weight_hh" in name:
            blocks = []
            for _ in range(G):  # orthogonal per gate: keeps |W_hh h| ~ |h| at the start
                q, r = np.linalg.qr(rng.standard_normal((H, H)))
                blocks.append(q * np.sign(np.diag(r)))
            out[name] = np.concatenate(blocks, axis=0)
        elif "weight" in name:  # weight_ih and head: Glorot-uniform per gate block
            fan_out, fan_in = (H if name.startswith("rnn.") else shape[0]), shape[1]
            k = np.sqrt(6.0 / (fan_in + fan_out))
            out[name] = rng.uniform(-k, k, size=shape)
        else:
            b = np.zeros(shape)
            if arch.cell == "lstm" and "bias_ih" in name:
                b[H : 2 * H] = 1.0  # forget gate open at the start: long memory by default
            out[name] = b
    return out
