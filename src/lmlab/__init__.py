"""lmlab: language models from n-grams to transformers."""
__version__ = "0.1.0"
