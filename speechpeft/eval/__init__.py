"""Evaluation: normalisers and corpus-pooled error rates (reports and plots live beside them)."""

from .metrics import ErrorRate, error_rate
from .normalise import NORMALISERS, has_opencc, make_normaliser

__all__ = ["NORMALISERS", "ErrorRate", "error_rate", "has_opencc", "make_normaliser"]
