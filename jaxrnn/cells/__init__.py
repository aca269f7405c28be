"""Built-in cells (one module each) and the ``Cell`` interface."""

from jaxrnn.cells import elman, gru, lstm
from jaxrnn.cells.base import Cell

__all__ = ["Cell", "elman", "gru", "lstm"]
