"""Model files: one ``.safetensors`` file, PyTorch tensor names, JSON metadata.

The format is a public contract, documented in docs/model-format.md.  Loading
validates everything and raises ``ModelFileError`` with one clear message;
nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from streamrnn.errors import ModelFileError
from streamrnn.models import MODELS_DIR  # noqa: F401 (re-exported: the one models folder)
from streamrnn.nn.cells import ACT_CODES, CELL_CODES, Architecture
from streamrnn.nn.text import MAX_VOCAB, Vocab

FORMAT_VERSION = 2  # the newest format this reader knows; it reads every format in READ_FORMATS
READ_FORMATS = (1, 2)
# Format 2 added "bidirectional" and "delay" (docs/model-format.md).  A format-1 reader would misread
# such a file (wrong tensors, or outputs reported for the wrong frames), so files that use them say
# format 2 and format-1 readers refuse them; every other file is still written as format 1.
FORMAT_2_KEYS = ("bidirectional", "delay")
META_KEY = "streamrnn"
MAX_MODEL_BYTES = 256 * 2**20  # 256 MiB: far above any streaming RNN, well below memory


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package (``load_model(name)``)."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.safetensors"))


def is_bundled_name(path_or_name) -> bool:
    """The one rule: a ``str`` with no path separator and no suffix (``"vad"``) names a bundled
    model; anything else (``"./vad"``, ``"models/vad"``, ``"vad.safetensors"``, any ``Path``)
    is a file.  A file in the working directory never shadows a bundled name."""
    if not isinstance(path_or_name, str):
        return False
    return "/" not in path_or_name and os.sep not in path_or_name and not Path(path_or_name).suffix \
        and path_or_name not in ("", ".", "..")


def resolve_model_path(path_or_name) -> Path:
    """The file of a bundled model name (``"vad"``) or of a path (see ``is_bundled_name``).

    >>> resolve_model_path("vad").name
    'vad.safetensors'
    """
    if is_bundled_name(path_or_name):
        bundled = MODELS_DIR / f"{path_or_name}.safetensors"
        if bundled.is_file():
            return bundled
        names = ", ".join(bundled_models()) or "none"
        raise ModelFileError(f"no bundled model named {path_or_name!r} (bundled: {names}); "
                             f"to load a file of that name write ./{path_or_name}")
    p = Path(path_or_name)
    if not p.exists():
        raise ModelFileError(f"model file not found: {p}")
    return p


def _read_header(path: Path, max_bytes: int) -> tuple[dict, int]:
    """Parse and check the safetensors header ourselves, so every defect gets a clear message."""
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelFileError(f"{path}: file is {size} bytes, above the limit of {max_bytes} bytes")
    if size < 8:
        raise ModelFileError(f"{path}: not a safetensors file ({size} bytes, shorter than the 8-byte header length)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:  # (the length itself is not shown: in a foreign file it is 8 bytes of its content)
            raise ModelFileError(f"{path}: not a safetensors file or truncated (its header length is larger "
                                 f"than the {size} bytes of the file)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ModelFileError(f"{path}: not a safetensors file (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors file (header is not a JSON object)")
    data_len = size - 8 - n
    meta = header.get("__metadata__")
    if meta is not None and (not isinstance(meta, dict)
                             or not all(isinstance(v, str) for v in meta.values())):
        # safetensors metadata is a string -> string map; anything else is a forged file
        raise ModelFileError(f"{path}: '__metadata__' must be an object of strings")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        # every entry must be {"dtype": str, "shape": [int >= 0], "data_offsets": [int, int]}:
        # checked here so later code never meets a string where it expects a number
        if (not isinstance(info, dict) or not isinstance(info.get("dtype"), str)
                or not isinstance(info.get("shape"), list) or not all(_is_uint(d) for d in info["shape"])):
            raise ModelFileError(f"{path}: tensor {name!r} needs a string 'dtype' and a list of "
                                 f"non-negative integers 'shape'")
        offsets = info.get("data_offsets")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets):
            raise ModelFileError(f"{path}: tensor {name!r} has no valid data_offsets") from None
        start, end = offsets
        if not (0 <= start <= end <= data_len):
            raise ModelFileError(f"{path}: truncated: tensor {name!r} needs bytes up to {end}, data has {data_len}")
    return header, size


def _is_uint(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_int(meta: dict, key: str, path: Path, minimum: int = 1, maximum: int = 1 << 16) -> int:
    v = meta.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not minimum <= v <= maximum:
        raise ModelFileError(f"{path}: metadata {key!r} must be an integer in [{minimum}, {maximum}], got {v!r}")
    return v


def parse_metadata(meta_json: str, path: Path) -> dict:
    try:
        meta = json.loads(meta_json)
    except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise ModelFileError(f"{path}: metadata {META_KEY!r} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: metadata {META_KEY!r} must be a JSON object")
    fmt = meta.get("format")
    if fmt not in READ_FORMATS or isinstance(fmt, bool):
        raise ModelFileError(f"{path}: model format {fmt!r} is not supported (this streamrnn reads formats "
                             f"{', '.join(map(str, READ_FORMATS))})")
    if fmt < 2:
        used = [k for k in FORMAT_2_KEYS if k in meta]
        if used:
            raise ModelFileError(f"{path}: metadata {', '.join(map(repr, used))} needs model format 2, the file "
                                 f"says format {fmt}")
    bidir = meta.get("bidirectional", False)
    if not isinstance(bidir, bool):
        raise ModelFileError(f"{path}: metadata 'bidirectional' must be true or false, got {bidir!r}")
    if "delay" in meta:
        _check_int(meta, "delay", path, minimum=0, maximum=1 << 16)
        if bidir and meta["delay"]:
            raise ModelFileError(f"{path}: a bidirectional model sees the whole sequence; 'delay' must be 0, "
                                 f"got {meta['delay']}")
    if not isinstance(meta.get("cell"), str) or meta["cell"] not in CELL_CODES:
        raise ModelFileError(f"{path}: unknown cell {meta.get('cell')!r}; expected one of {', '.join(CELL_CODES)}")
    for key in ("input_size", "hidden_size", "num_layers"):
        _check_int(meta, key, path, maximum=64 if key == "num_layers" else 1 << 16)
    head = meta.get("head")
    if head is not None:
        if not isinstance(head, dict):
            raise ModelFileError(f"{path}: metadata 'head' must be an object or null, got {head!r}")
        act = head.get("activation", "identity")
        if not isinstance(act, str) or act not in ACT_CODES:
            raise ModelFileError(f"{path}: unknown head activation {head.get('activation')!r}; expected one of {', '.join(ACT_CODES)}")
        labels = head.get("labels")
        if labels is not None and (not isinstance(labels, list) or not all(isinstance(s, str) for s in labels)):
            raise ModelFileError(f"{path}: head 'labels' must be a list of strings, got {labels!r}")
    fe = meta.get("frontend")
    if fe is not None and not isinstance(fe, dict):
        raise ModelFileError(f"{path}: metadata 'frontend' must be an object or null, got {fe!r}")
    return meta


_NP_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


def read_model_file(path_or_name, *, max_bytes: int = MAX_MODEL_BYTES) -> dict:
    """Read and validate a model file (or a bundled model by name) into the keyword arguments of
    ``Model``: ``arch``, ``tensors``, ``labels``, ``frontend``, ``name``, ``delay``, ``extra_meta``.

    ``streamrnn.load_model`` builds the ``Model`` from them (this module knows the file, not the
    model class).  Raises ModelFileError naming the file and the defect.
    """
    path = resolve_model_path(path_or_name)
    if not path.is_file():
        raise ModelFileError(f"{path}: not a file")
    header, _ = _read_header(path, max_bytes)
    meta_all = header.get("__metadata__") or {}
    if META_KEY not in meta_all:
        raise ModelFileError(f"{path}: no {META_KEY!r} metadata entry: not a streamrnn model file (see docs/model-format.md)")
    meta = parse_metadata(meta_all[META_KEY], path)

    found = {k: v for k, v in header.items() if k != "__metadata__"}
    has_norm = "norm.mean" in found or "norm.std" in found
    vocab_size = _vocab_size(meta, found, path)
    head = meta.get("head")
    out_size = None
    if head is not None:
        hw = found.get("head.weight", {}).get("shape")
        if not hw or len(hw) != 2:
            raise ModelFileError(f"{path}: metadata declares a head but tensor 'head.weight' (O, H) is missing or not 2-D")
        out_size = int(hw[0])
        labels = head.get("labels")
        if labels is not None and len(labels) != out_size:
            raise ModelFileError(f"{path}: head has {out_size} outputs but {len(labels)} labels")
    arch = Architecture(meta["cell"], meta["input_size"], meta["hidden_size"], meta["num_layers"],
                        out_size, (head or {}).get("activation", "identity"), has_norm, vocab_size,
                        bidirectional=meta.get("bidirectional", False))
    want = arch.tensor_shapes()
    missing = [k for k in want if k not in found]
    extra = [k for k in found if k not in want]
    if missing:
        raise ModelFileError(f"{path}: missing tensors for a {arch.num_layers}-layer {arch.cell}: {', '.join(missing)}")
    if extra:
        hint = ("; a PyTorch bidirectional=True model needs metadata \"bidirectional\": true (format 2)"
                if any(k.endswith("_reverse") for k in extra) else "")
        raise ModelFileError(f"{path}: unexpected tensors: {', '.join(extra)}{hint}")
    for name, shape in want.items():
        got = tuple(found[name].get("shape", ()))
        if got != shape:
            raise ModelFileError(f"{path}: tensor {name!r} has shape {got}, expected {shape}")
        if found[name].get("dtype") not in _NP_DTYPES:
            raise ModelFileError(f"{path}: tensor {name!r} has dtype {found[name].get('dtype')}, expected F32, F64 or F16")

    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: cannot read tensors: {e}") from None
    for name, t in tensors.items():
        if not np.isfinite(t).all():
            raise ModelFileError(f"{path}: tensor {name!r} contains NaN or Inf")
    if has_norm and not (tensors["norm.std"] > 0).all():
        raise ModelFileError(f"{path}: tensor 'norm.std' must be > 0 everywhere (min {tensors['norm.std'].min()})")

    frontend = meta.get("frontend")
    if frontend is not None:
        frontend = _validate_frontend(frontend, arch, path)
    known = {"format", "cell", "input_size", "hidden_size", "num_layers", "head", "frontend", "name",
             *FORMAT_2_KEYS}
    return dict(arch=arch, tensors=tensors, labels=(head or {}).get("labels"), frontend=frontend,
                name=meta.get("name") or path.stem, delay=meta.get("delay", 0),
                extra_meta={k: v for k, v in meta.items() if k not in known})


def _vocab_size(meta: dict, found: dict, path: Path) -> int | None:
    """Rows of ``embedding.weight`` of a token model (checked against ``vocab``), or None."""
    emb = found.get("embedding.weight")
    if emb is None:
        if meta.get("vocab") is not None:
            raise ModelFileError(f"{path}: metadata has a 'vocab' but no tensor 'embedding.weight' (V, input_size)")
        return None
    shape = emb.get("shape")
    if len(shape) != 2 or shape[1] != meta["input_size"] or not 1 <= shape[0] <= MAX_VOCAB:
        raise ModelFileError(f"{path}: tensor 'embedding.weight' has shape {tuple(shape)}, expected "
                             f"(V, {meta['input_size']}) with 1 <= V <= {MAX_VOCAB}")
    if "norm.mean" in found or "norm.std" in found:
        raise ModelFileError(f"{path}: a token model (embedding.weight) takes no input normalisation (norm.*)")
    if meta.get("bidirectional") or meta.get("delay"):
        raise ModelFileError(f"{path}: a token model (embedding.weight) predicts the next token from the tokens "
                             f"so far; it cannot be bidirectional or have a delay (got bidirectional "
                             f"{meta.get('bidirectional', False)}, delay {meta.get('delay', 0)})")
    Vocab.from_meta(meta.get("vocab"), shape[0], str(path))
    return int(shape[0])


def _validate_frontend(fe: dict, arch: Architecture, path: Path) -> dict:
    """Check the front-end settings with the audio package's own parser (imported here: it loads
    the front end's kernels, which feature-frame models never need)."""
    from streamrnn.audio.frontend import frontend_from_dict
    from streamrnn.errors import StreamRNNError

    try:
        obj = frontend_from_dict(fe)
    except (StreamRNNError, TypeError, ValueError, OverflowError) as e:  # OverflowError: e.g. hop_length=10**20
        raise ModelFileError(f"{path}: invalid 'frontend' metadata: {e}") from None
    n_out = getattr(obj, "n_features", None)
    if n_out is not None and n_out != arch.input_size:
        raise ModelFileError(f"{path}: front end yields {n_out} features per frame but the model takes {arch.input_size}")
    return fe


def model_metadata(model) -> dict:
    """The JSON metadata of ``model`` (a ``Model``) as the file stores it."""
    a = model.arch
    meta = {"format": 2 if (a.bidirectional or model.delay) else 1, "cell": a.cell, "input_size": a.input_size,
            "hidden_size": a.hidden_size, "num_layers": a.num_layers,
            "head": ({"activation": a.activation, "labels": model.labels} if a.output_size else None),
            "frontend": model.frontend}
    if a.bidirectional:
        meta["bidirectional"] = True
    if model.delay:
        meta["delay"] = model.delay
    if model.name:
        meta["name"] = model.name
    meta.update(model.extra_meta)
    return meta


def current_umask() -> int:
    """The process's file-mode creation mask (e.g. ``0o022``), read without changing it where the
    OS tells it (Linux ``/proc/self/status``), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_like_new_file(path) -> None:
    """Give ``path`` the mode a plain ``open(path, "w")`` would: ``0o666`` less the umask (0644 under
    umask 022).  safetensors writes ``0600`` files, which a service user could not read."""
    os.chmod(path, 0o666 & ~current_umask())


def save_model(model, path) -> None:
    """Write ``model`` as a streamrnn model file, atomically (temp file + rename), readable as the
    umask allows (0644 under umask 022), like any file the user writes."""
    from safetensors.numpy import save_file

    path = Path(path)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model.tensors().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(model_metadata(model))})
    chmod_like_new_file(tmp)
    os.replace(tmp, path)
