"""edge-mer: multimodal emotion recognition at the edge."""
__version__ = "0.1.0"
