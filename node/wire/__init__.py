"""The formats that cross between nodes: envelopes, receipts, batches, field paths. Pure: bytes in,
checked values out.
"""
