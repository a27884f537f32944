"""Who is who in the federation and how it is proved: this node's keys, the signed directory, the
rules for accepting it, TLS pinned by it.
"""
