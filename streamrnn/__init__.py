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
    StreamRNNError,
    TrainingError,
    WireError,
)
from streamrnn.nn.model import Bank, Model, Stream
from streamrnn.nn.modelfile import bundled_models, load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "AudioError", "CapacityError", "ConfigError", "InputError", "ModelFileError", "ShapeError", "SnapshotError",
    "StreamRNNError", "TrainingError", "WireError", "Bank", "Model", "Stream", "bundled_models",
    "load_model", "save_model", "__version__",
]
