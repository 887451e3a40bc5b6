"""The package's imports point down only and form no circle (issue 14, "clean layers").

Every ``import`` statement in ``streamrnn/`` is read with ``ast`` (module level and inside
functions alike: a lazy import is still a dependency), then checked against the layer table of
docs/architecture.md: a module may import its own layer's modules of the same subpackage and any
lower layer, never a higher one; and the module graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "streamrnn"

# layer of each top-level module or subpackage (docs/architecture.md, "Layers")
LAYERS = {
    "errors": 0, "models": 0,
    "snapshot": 1, "stats": 1, "config": 1, "compiling": 1,
    "audio": 2,
    "nn": 3, "transport": 3,
    "runtime": 4, "train": 4,
    "__init__": 5, "serve": 5,  # the public API; `streamrnn serve` (workers of the runtime; neither imports the other)
    "cli": 6,
    "__main__": 7,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every streamrnn module ``path`` imports (absolute names; ``from pkg import mod`` resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path).split(".")
    pkg = me if path.name == "__init__.py" else me[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "streamrnn")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "streamrnn":
                continue
            for a in node.names:  # `from streamrnn.nn import modelfile` imports the module streamrnn.nn.modelfile
                sub = ROOT.parent / Path(*(base + "." + a.name).split("."))
                out.add(base + "." + a.name if sub.with_suffix(".py").is_file() or sub.is_dir() else base)
    return out


def layer_of(mod: str) -> tuple[int, str]:
    parts = mod.split(".")
    if len(parts) == 1:  # the package itself: its __init__ (the public API)
        return LAYERS["__init__"], "__init__"
    return LAYERS[parts[1]], parts[1]


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def test_every_module_has_a_layer():
    missing = sorted({m.split(".")[1] for m in graph() if len(m.split(".")) > 1} - set(LAYERS))
    assert not missing, f"add these to LAYERS (and docs/architecture.md): {missing}"


def test_imports_point_down_only():
    bad = []
    for mod, deps in graph().items():
        lm, gm = layer_of(mod)
        for d in deps:
            ld, gd = layer_of(d)
            if ld > lm or (ld == lm and gd != gm):
                bad.append(f"{mod} (layer {lm}) imports {d} (layer {ld})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle():
    full = graph()
    g = {m: {d for d in deps if d in full} for m, deps in full.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, trail):
        state[m] = 1
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(trail[trail.index(d):] + [d]) if d in trail else f"{m} -> {d}")
            elif d not in state:
                visit(d, trail + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("src, expect", [
    ("from streamrnn.nn.model import Model", {"streamrnn.nn.model"}),
    ("from streamrnn.nn import modelfile", {"streamrnn.nn.modelfile"}),
    ("def f():\n    import streamrnn.audio.stream", {"streamrnn.audio.stream"}),
    ("from streamrnn import load_model", {"streamrnn"}),
])
def test_the_walk_sees_every_form_of_import(tmp_path, src, expect, monkeypatch):
    p = ROOT / "nn" / "_probe_not_a_module.py"  # never written: parse a string as if it lived in nn/
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: src)
    assert imports_of(p) == expect
