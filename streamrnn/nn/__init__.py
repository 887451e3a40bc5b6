"""Recurrent cells, Numba kernels, models and streams, model files."""
