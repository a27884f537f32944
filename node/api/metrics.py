"""Prometheus metrics of one node (a registry per app, nothing global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "puente_api_requests",
            "Local API requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.disclosures = Gauge(
            "puente_disclosures",
            "Disclosures in the outbox by state",
            ["state"],
            registry=self.registry,
        )
        self.received = Gauge(
            "puente_received_messages", "Envelopes received and stored", registry=self.registry
        )
        self.audit_entries = Gauge(
            "puente_audit_log_entries", "Entries in the audit log", registry=self.registry
        )
        self.directory_expiry = Gauge(
            "puente_directory_expires_in_seconds",
            "Seconds until the installed federation directory expires",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
