"""The verifiable audit log: appending, the stored Merkle tree, checkpoints, witnessing, auditor
queries, export.
"""
