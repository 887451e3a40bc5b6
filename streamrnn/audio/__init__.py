"""Audio: the streaming front end (LogMel, MFCC), the resampler, audio and label files, streams.

``LogMel``/``MFCC`` turn samples into feature frames (``frontend``), ``Resampler``
brings any input rate to the front end's (``resample``), ``FeatureStream`` and
``AudioStream`` chain them with a model (``stream``), ``files`` reads audio and
Audacity label files.  See docs/frontend.md.
"""

from streamrnn.audio.frontend import MFCC, LogMel, frontend_from_dict

__all__ = ["LogMel", "MFCC", "Resampler", "frontend_from_dict"]


def __getattr__(name):  # Resampler imports soxr: load it on first use only
    if name == "Resampler":
        from streamrnn.audio.resample import Resampler

        return Resampler
    raise AttributeError(f"module 'streamrnn.audio' has no attribute {name!r}")
