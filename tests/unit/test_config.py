from __future__ import annotations

import pytest

from sayiir_grpc import config
from sayiir_grpc.cli import build_parser
from sayiir_grpc.migrate import MigrationError, check_server_version


def test_defaults() -> None:
    settings = config.load(None, {})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.database_url is None
    assert settings.codec == "json"


def test_flag_beats_environment() -> None:
    args = build_parser().parse_args(["serve", "--listen", "0.0.0.0:6000"])
    settings = config.load(args, {"SAYIIR_LISTEN": "127.0.0.1:7000", "SAYIIR_CODEC": "protobuf"})
    assert settings.listen == "0.0.0.0:6000"
    assert settings.codec == "protobuf"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SAYIIR_LISTEN": "nowhere"}, "SAYIIR_LISTEN"),
        ({"SAYIIR_CODEC": "rkyv"}, "SAYIIR_CODEC"),
        ({"SAYIIR_POOL_MAX_CONNECTIONS": "0"}, "SAYIIR_POOL_MAX_CONNECTIONS"),
        ({"SAYIIR_POOL_ACQUIRE_TIMEOUT": "soon"}, "SAYIIR_POOL_ACQUIRE_TIMEOUT"),
        ({"SAYIIR_LOG_LEVEL": "loud"}, "SAYIIR_LOG_LEVEL"),
    ],
)
def test_invalid_values_name_the_setting(env: dict[str, str], needle: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(None, env)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_every_setting_is_a_flag_and_a_sayiir_variable() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for setting in config.SETTINGS:
        assert setting.env.startswith("SAYIIR_")
        assert setting.flag in help_text and setting.env in help_text


def test_old_postgresql_is_refused_with_a_clear_message() -> None:
    with pytest.raises(MigrationError, match=r"PostgreSQL 12 is not supported.*13 or newer"):
        check_server_version(120_015)
    check_server_version(130_000)
    check_server_version(180_001)


def test_readme_lists_every_setting() -> None:
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "update_readme_settings", root / "scripts" / "update_readme_settings.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (root / "README.md").read_text()
    assert module.render(readme) == readme, "README settings table is stale: run scripts/update_readme_settings.py"
    for setting in config.SETTINGS:
        assert f"`{setting.env}`" in readme and f"`{setting.flag}`" in readme
