"""Size limits of what crosses between nodes, in one place so that they agree.

The sealer, the opener, the HTTP body limits and the configuration all read
these; docs/envelope.md and docs/delivery.md state them.
"""

from __future__ import annotations

# The largest envelope (JWE compact serialization) a node seals or opens.
MAX_ENVELOPE_BYTES = 1_048_576
# At most this many messages in one batch: a batch is one transaction at the
# recipient, so it stays short.
MAX_BATCH_MESSAGES = 64
