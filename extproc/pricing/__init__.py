"""Turning usage into integer micro-USD."""

from extproc.pricing.pricer import Price, Pricer

__all__ = ["Price", "Pricer"]
