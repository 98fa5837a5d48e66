"""The caller's trace context, sent with every call as W3C `traceparent` metadata
(`sayiir_common.calls` sends it; this name stays for the client's users)."""

from sayiir_common.calls import outgoing_metadata

__all__ = ["outgoing_metadata"]
