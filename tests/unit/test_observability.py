"""The metrics a scrape shows before anything has happened."""

from __future__ import annotations

from prometheus_client import generate_latest

from sayiir_grpc.observability import Metrics


def test_purged_total_has_a_zero_series_per_finished_status_from_the_start() -> None:
    scraped = generate_latest(Metrics().registry).decode()
    for status in ("Completed", "Failed", "Cancelled"):
        assert f'sayiir_grpc_purged_total{{status="{status}"}} 0.0' in scraped
    for status in ("InProgress", "Paused"):
        assert f'sayiir_grpc_purged_total{{status="{status}"}}' not in scraped
