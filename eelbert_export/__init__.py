"""eelbert-export: tiny EELBERT text models with a portable hash embedding, ready for devices."""

from eelbert_export.hashing import HashEmbedding, HashSpec, embed_reference

__all__ = ["HashEmbedding", "HashSpec", "embed_reference"]
