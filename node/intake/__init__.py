"""The receiving authority's side: accepting envelopes, checking terms, summaries under data keys,
withdrawal, retention, the inbox.
"""
