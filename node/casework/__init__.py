"""The sending authority's services: cases, consents, preview and disclose, share-back."""
