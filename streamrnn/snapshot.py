"""Snapshots of carried state: the one version number and the one check every ``restore`` makes.

A snapshot is a plain dict ``{"version", "kind", ...}`` of arrays and JSON-able values
(never pickled).  ``Stream``, ``Bank`` slots, ``LogMel``/``MFCC``, ``Resampler``,
``FeatureStream``, ``AudioStream`` and ``AudioBank`` slots all write ``SNAPSHOT_VERSION``
and check what they are given with ``check_snapshot`` before touching any state.

>>> check_snapshot({"version": SNAPSHOT_VERSION, "kind": "stream", "settings": {"hidden_size": 7}},
...                "stream", "Stream", {"hidden_size": 9}, against="model")
Traceback (most recent call last):
...
streamrnn.errors.SnapshotError: Stream snapshot does not fit this model (hidden_size: snapshot 7 vs model 9)
"""

from __future__ import annotations

from streamrnn.errors import SnapshotError

SNAPSHOT_VERSION = 1  # of every snapshot dict; a restore refuses any other


def check_snapshot(snap, kind: str, what: str, settings: dict | None = None, *, key: str = "settings",
                   against: str = "settings") -> None:
    """Raise SnapshotError unless ``snap`` is a version-``SNAPSHOT_VERSION`` snapshot of ``kind`` whose
    ``snap[key]`` equals ``settings`` (if given).

    ``what`` names the restoring object in the messages (``"AudioStream"``); ``against`` names what
    the settings describe (``"model"``: "hidden_size: snapshot 7 vs model 9").
    """
    if not isinstance(snap, dict) or "version" not in snap or "kind" not in snap:
        raise SnapshotError(f"not a snapshot: expected the dict from {what}.snapshot(), got {type(snap).__name__}")
    if snap["kind"] != kind:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise SnapshotError(f"not {article} {what} snapshot: a {snap['kind']!r} snapshot cannot be restored "
                            f"into a {kind!r}")
    if snap["version"] != SNAPSHOT_VERSION:
        raise SnapshotError(f"{what} snapshot version {snap['version']!r} is not supported "
                            f"(this streamrnn reads {SNAPSHOT_VERSION})")
    if settings is None:
        return
    got = snap.get(key)
    got = got if isinstance(got, dict) else {}
    diff = [f"{k}: snapshot {got.get(k)!r} vs {against} {v!r}" for k, v in settings.items() if got.get(k) != v]
    diff += [f"{k}: snapshot {v!r} vs {against} None" for k, v in got.items() if k not in settings]
    if diff:
        label = "settings differ" if against == "settings" else f"does not fit this {against}"
        raise SnapshotError(f"{what} snapshot {label} (" + "; ".join(diff) + ")")
