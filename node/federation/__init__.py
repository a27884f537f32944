"""The federation port and this node's part in the federation: the app peers talk to, directory
upkeep, key rotation, peer limits.
"""
