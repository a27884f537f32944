"""What every part of the node uses: errors, time, logs, problem details, schemas, canonical JSON,
configuration.
"""
