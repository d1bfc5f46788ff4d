"""eelbert-export: tiny EELBERT text models with a portable hash embedding, ready for devices."""

from importlib.metadata import version

from eelbert_export.hashing import HashEmbedding, HashSpec, embed_reference

__version__ = version("eelbert-export")
__all__ = ["HashEmbedding", "HashSpec", "__version__", "embed_reference"]
