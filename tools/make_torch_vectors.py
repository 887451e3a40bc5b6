#!/usr/bin/env python3
"""Generate PyTorch reference vectors for tests/test_torch_parity.py.

For every cell (nn.GRU, nn.LSTM, nn.RNN tanh/relu) and 1-3 layers, builds a
PyTorch model with a Linear head, saves it in the streamrnn model format with
exactly the code shown in docs/model-format.md, runs 1,000 random frames
through PyTorch and stores the input and PyTorch's output beside it.

Bidirectional models (``bidirectional=True``: GRU and LSTM with 1-3 layers, an
Elman RNN with 2; head of input size 2H; format 2 with ``"bidirectional": true``)
are written as ``tests/data/torch_bi_*`` with 300 frames each.

The character models are ``nn.Embedding`` + ``nn.GRU``/``nn.LSTM`` (2 layers) + ``nn.Linear``
head with softmax, exported with their vocabulary as docs/model-format.md shows; their
input is 500 token ids and the output PyTorch's next-token probabilities.

    python tools/make_torch_vectors.py                      # writes every torch_* and torchlm_* file
    python tools/make_torch_vectors.py --only unidirectional # only the torch_<cell>_l<n> files
    python tools/make_torch_vectors.py --only bidirectional # only the torch_bi_* files
    python tools/make_torch_vectors.py --only charlm        # only the character models (torchlm_*)

Needs torch (not needed by the test suite, which only reads the files).
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"
I, H, T = 6, 12, 1000
ACTS = {"gru": "sigmoid", "lstm": "softmax", "rnn_tanh": "identity", "rnn_relu": "sigmoid"}


def build(cell, layers, bidirectional=False):
    if cell == "gru":
        return torch.nn.GRU(I, H, num_layers=layers, bidirectional=bidirectional)
    if cell == "lstm":
        return torch.nn.LSTM(I, H, num_layers=layers, bidirectional=bidirectional)
    return torch.nn.RNN(I, H, num_layers=layers, nonlinearity=cell.split("_")[1], bidirectional=bidirectional)


def char_models():
    """Token models: nn.Embedding -> 2-layer GRU/LSTM -> Linear -> softmax, with a vocab."""
    torch.manual_seed(4321)
    tokens = ["<unk>"] + list("abcdefghijklmnopqrstuvwxyz .,")
    V, E, n = len(tokens), 5, 500
    for cell in ("gru", "lstm"):
        emb = torch.nn.Embedding(V, E)
        rnn = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(E, H, num_layers=2)
        head = torch.nn.Linear(H, V)
        # --- the documented export (docs/model-format.md, "Token models") ---
        tensors = {"embedding.weight": emb.weight.detach().contiguous()}
        tensors |= {f"rnn.{k}": v.detach().contiguous() for k, v in rnn.state_dict().items()}
        tensors |= {f"head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()}
        meta = {"format": 1, "cell": cell, "input_size": E, "hidden_size": H, "num_layers": 2,
                "head": {"activation": "softmax", "labels": None}, "frontend": None,
                "vocab": {"kind": "char", "tokens": tokens}}
        name = f"torchlm_{cell}"  # not torch_*: test_torch_parity globs those
        save_file(tensors, str(OUT / f"{name}.safetensors"), metadata={"streamrnn": json.dumps(meta)})
        ids = torch.randint(0, V, (n,))
        with torch.no_grad():
            out, _ = rnn(emb(ids)[:, None, :])  # (n, 1, H)
            y = torch.softmax(head(out[:, 0]), -1)
        save_file({"ids": ids.contiguous(), "y": y.contiguous()}, str(OUT / f"{name}.io.safetensors"),
                  metadata={"torch": torch.__version__})
        print(name, tuple(y.shape))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("unidirectional", "bidirectional", "charlm"), default=None)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "unidirectional"):
        unidirectional()
    if args.only in (None, "bidirectional"):
        bidirectional()
    if args.only in (None, "charlm"):
        char_models()


def export(name, rnn, head, meta, with_norm, n_frames):
    """Save ``rnn`` + ``head`` (+ a random input normalisation if ``with_norm``) as ``name`` with the
    documented export code, and PyTorch's own output over ``n_frames`` random frames beside it."""
    # --- the documented export (docs/model-format.md); a bidirectional state_dict has *_reverse names ---
    tensors = {f"rnn.{k}": v.detach().contiguous() for k, v in rnn.state_dict().items()}
    tensors |= {f"head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()}
    mean, std = torch.randn(I), torch.rand(I) + 0.5
    if with_norm:
        tensors |= {"norm.mean": mean, "norm.std": std}
    save_file(tensors, str(OUT / f"{name}.safetensors"), metadata={"streamrnn": json.dumps(meta)})
    # --- PyTorch's own output, one sequence ---
    x = torch.randn(n_frames, I) * 1.5
    with torch.no_grad():
        xin = (x - mean) / std if with_norm else x
        out, _ = rnn(xin[:, None, :])  # (T, 1, H), or (T, 1, 2H) [forward, reverse]; batch_first=False
        z = head(out[:, 0])
        act = meta["head"]["activation"]
        y = {"identity": z, "sigmoid": torch.sigmoid(z), "softmax": torch.softmax(z, -1)}[act]
    save_file({"x": x.contiguous(), "y": y.contiguous()}, str(OUT / f"{name}.io.safetensors"),
              metadata={"torch": torch.__version__})
    print(name, tuple(y.shape))


def bidirectional():
    torch.manual_seed(4321)
    cases = [("gru", n) for n in (1, 2, 3)] + [("lstm", n) for n in (1, 2, 3)] + [("rnn_tanh", 2)]
    for cell, layers in cases:
        act = ACTS[cell]
        O = 3 if act == "softmax" else 2
        rnn, head = build(cell, layers, bidirectional=True), torch.nn.Linear(2 * H, O)  # head input 2H
        meta = {"format": 2, "cell": cell, "input_size": I, "hidden_size": H, "num_layers": layers,
                "bidirectional": True, "head": {"activation": act, "labels": [f"c{k}" for k in range(O)]},
                "frontend": None}
        export(f"torch_bi_{cell}_l{layers}", rnn, head, meta, with_norm=layers == 2 and cell == "lstm",
               n_frames=300)


def unidirectional():
    torch.manual_seed(1234)
    for cell, act in ACTS.items():
        for layers in (1, 2, 3):
            O = 3 if act == "softmax" else 2
            rnn, head = build(cell, layers), torch.nn.Linear(H, O)
            meta = {"format": 1, "cell": cell, "input_size": I, "hidden_size": H, "num_layers": layers,
                    "head": {"activation": act, "labels": [f"c{k}" for k in range(O)]}, "frontend": None}
            # one model also carries input normalisation
            export(f"torch_{cell}_l{layers}", rnn, head, meta, with_norm=cell == "gru" and layers == 2,
                   n_frames=T)


if __name__ == "__main__":
    main()
