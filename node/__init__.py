"""Puente: a federation node that exchanges minimal, consent-bound, signed and
encrypted case summaries between migration and protection authorities."""

__version__ = "0.1.0"
