"""The demo: a local federation, its story, and invented (synthetic) data."""
