"""Puente audit: the verifiable audit log of disclosures."""
