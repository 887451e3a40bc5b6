"""streamrnn: a real-time recurrent-network stream processor.

The public API::

    import streamrnn
    model = streamrnn.load_model("model.safetensors")   # or a bundled name
    s = model.stream()
    y = s.push(x)          # x (T, input_size) -> y (T, output_size); state carried
"""

from streamrnn.errors import (
    AudioError,
    CapacityError,
    ConfigError,
    InputError,
    ModelFileError,
    ShapeError,
    SnapshotError,
    StreamingError,
    StreamExistsError,
    StreamIdError,
    StreamRNNError,
    TrainingError,
    WireError,
)
from streamrnn.nn.model import Bank, Model, Stream, load_model, save_model
from streamrnn.nn.modelfile import bundled_models

__version__ = "0.1.0"

__all__ = [
    "AudioError", "CapacityError", "ConfigError", "InputError", "ModelFileError", "ShapeError", "SnapshotError",
    "StreamingError", "StreamRNNError", "StreamIdError", "StreamExistsError", "TrainingError", "WireError", "Bank",
    "Model", "Stream", "bundled_models",
    "load_model", "save_model", "__version__", "LogMel", "MFCC", "Resampler", "AudioStream", "FeatureStream",
    "AudioBank", "StreamConfig", "EventParams", "EventDetector", "run_stream", "run_features", "speech_segments",
]

_LAZY = {"LogMel": "streamrnn.audio.frontend", "MFCC": "streamrnn.audio.frontend",
         "Resampler": "streamrnn.audio.resample", "AudioStream": "streamrnn.audio.stream",
         "FeatureStream": "streamrnn.audio.stream", "AudioBank": "streamrnn.audio.stream",
         "StreamConfig": "streamrnn.config", "EventParams": "streamrnn.config",
         "EventDetector": "streamrnn.runtime.events", "run_stream": "streamrnn.runtime.run",
         "run_features": "streamrnn.runtime.run", "speech_segments": "streamrnn.runtime.batch"}


def __getattr__(name):  # audio loads soxr/soundfile, the runtime ZeroMQ: import them on first use only
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'streamrnn' has no attribute {name!r}")
