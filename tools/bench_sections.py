"""Sections of tools/bench.py that exercise the runtime, the bank and the trainer (filled in as they land)."""


def _todo(name):
    return {"markdown": f"## {name}\n\nNot measured yet.\n"}


def bench_pipeline(a):
    return _todo("Whole pipeline")


def bench_streams(a):
    return _todo("Many streams")


def bench_startup(a):
    return _todo("Start-up")


def bench_train(a):
    return _todo("Training")
