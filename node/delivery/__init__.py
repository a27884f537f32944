"""Getting disclosures to their recipients: the outbox, one queue per peer, the delivery store and
status, backoff.
"""
