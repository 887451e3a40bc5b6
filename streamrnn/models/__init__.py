"""The bundled model files and the demo recording: the one folder they live in (package data).

>>> (MODELS_DIR / "vad.safetensors").is_file()
True
"""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
