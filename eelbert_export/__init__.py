"""eelbert-export: tiny EELBERT text models with a portable hash embedding, ready for devices.
The package root imports nothing heavy: the command line and ``predict`` on an ONNX or TFLite
file start without torch."""

from importlib.metadata import version

__version__ = version("eelbert-export")
