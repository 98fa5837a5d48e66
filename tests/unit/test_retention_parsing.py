"""The one duration syntax (retention periods, `purge --older-than`) and SAYIIR_RETENTION."""

from __future__ import annotations

import pytest

from sayiir_grpc import config
from sayiir_grpc.retention import RetentionPolicy, format_duration, parse_duration, parse_policy, parse_status


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43_200), ("7d", 604_800), ("1.5h", 5400), (" 30d ", 2_592_000)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "7w", "-1d", "0s", "1e3s", "7 days", "36501d"])
def test_bad_durations_say_the_syntax(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|more than 0"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "name"), [("Completed", "Completed"), ("failed", "Failed"), ("CANCELLED", "Cancelled")]
)
def test_finished_statuses_any_case(text: str, name: str) -> None:
    assert parse_status(text) == name


@pytest.mark.parametrize("text", ["InProgress", "in_progress", "Paused", "paused"])
def test_in_progress_and_paused_are_never_purgeable(text: str) -> None:
    with pytest.raises(ValueError, match="never purged"):
        parse_status(text)


def test_setting_parses_the_policy_and_prints_it_back() -> None:
    settings = config.load(environ={"SAYIIR_RETENTION": "Completed=7d,cancelled=7d, Failed=30d"})
    assert settings.retention == RetentionPolicy(
        (("Completed", 604_800.0), ("Cancelled", 604_800.0), ("Failed", 2_592_000.0))
    )
    assert str(settings.retention) == "Completed=7d,Cancelled=7d,Failed=30d"
    assert config.load(environ={}).retention is None  # unset: kept forever


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Completed", "is not STATUS=DURATION"),
        ("Completed=7", "is not a duration"),
        ("Paused=7d", "Paused workflows are never purged"),
        ("Done=7d", "unknown status 'Done'"),
        ("Completed=7d,completed=1d", "Completed is given twice"),
        (",", "no STATUS=DURATION pair"),
    ],
)
def test_a_bad_policy_stops_the_start_naming_the_setting(value: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=f"SAYIIR_RETENTION.*{message}"):
        config.load(environ={"SAYIIR_RETENTION": value})


def test_parse_policy_keeps_the_order_given() -> None:
    assert [s for s, _ in parse_policy("Failed=1d,Completed=2d").periods] == ["Failed", "Completed"]
