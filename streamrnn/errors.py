"""Typed errors raised at the boundaries of streamrnn.

Every error carries a message that names the offending value and the limit it
broke, so the CLI can print one line and exit non-zero without a traceback.
"""

from __future__ import annotations


class StreamRNNError(Exception):
    """Base class of every error streamrnn raises on purpose."""


class ModelFileError(StreamRNNError):
    """A model file is missing, unreadable, not safetensors, or inconsistent."""


class ShapeError(StreamRNNError, ValueError):
    """An array has the wrong shape or dtype for the model or stream."""


class InputError(StreamRNNError, ValueError):
    """Input values are unusable (NaN/Inf, out of range)."""


class SnapshotError(StreamRNNError, ValueError):
    """A snapshot does not fit the stream it is restored into."""


class StreamingError(StreamRNNError, ValueError):
    """The model cannot run as a stream (a bidirectional model needs the whole sequence)."""


class StreamIdError(StreamRNNError, KeyError):
    """A stream id is not open in a bank."""

    def __str__(self):  # KeyError would print the message quoted, like a key
        return str(self.args[0]) if self.args else ""


class StreamExistsError(StreamRNNError, ValueError):
    """A stream id is already open in a bank (close or reset it instead)."""


class CapacityError(StreamRNNError):
    """A configured bound (streams, queue length, size) was reached."""


class ConfigError(StreamRNNError, ValueError):
    """A configuration value or key is invalid."""


class AudioError(StreamRNNError, ValueError):
    """Audio input (signal, file, sample rate, label file) is invalid."""


class WireError(StreamRNNError, ValueError):
    """A streamrnn/1 message is malformed; ``reason`` is its counter name."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class TrainingError(StreamRNNError):
    """Training cannot go on (diverged, bad data, bad checkpoint)."""
