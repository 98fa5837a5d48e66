"""README.md as a reader uses it: every Python block runs as pasted against a
real service, and every command of `sayiir-grpc` is there, with a `--help`
that lists only the flags the command uses."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from conftest import start_service
from sayiir_grpc import config
from sayiir_grpc.app import RunningServer
from sayiir_grpc.cli import MIGRATE_SETTINGS, build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)
# The address the examples use; each run points it at the service the test started.
EXAMPLE_TARGET = "127.0.0.1:50051"


@pytest.fixture(scope="module")
async def readme_service(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[RunningServer]:
    """A service of its own, on an empty database: the examples name fixed instances."""
    running = await start_service(await make_database(), pool_max_connections=4)
    yield running
    await running.stop(grace=1)


def test_the_readme_has_python_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 3
    assert all(EXAMPLE_TARGET in block for block in PYTHON_BLOCKS)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
async def test_each_python_block_runs_as_pasted(index: int, readme_service: RunningServer) -> None:
    code = PYTHON_BLOCKS[index].replace(EXAMPLE_TARGET, f"127.0.0.1:{readme_service.port}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = output.decode()
    assert proc.returncode == 0, f"README block {index} failed:\n{PYTHON_BLOCKS[index]}\n--- output ---\n{text}"
    # Where a block states what it prints, it prints that.
    for line in PYTHON_BLOCKS[index].splitlines():
        shown = re.search(r"print\(.*\)\s+# (.+)$", line)
        if shown:
            assert shown.group(1).strip() in text, (line, text)


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")} - {"--help"}


def test_every_command_is_in_the_readme() -> None:
    commands = _commands()
    assert {"serve", "migrate", "healthcheck", "check"} <= set(commands)
    for name in commands:
        assert f"`sayiir-grpc {name}" in README, f"README does not show `sayiir-grpc {name}`"


def test_each_command_help_lists_only_the_flags_it_uses() -> None:
    commands = _commands()
    every_setting = {setting.flag for setting in config.SETTINGS}
    assert _flags(commands["serve"]) == every_setting
    migrate = {setting.flag for setting in config.SETTINGS if setting.name in MIGRATE_SETTINGS}
    assert _flags(commands["migrate"]) == migrate == {"--database-url", "--data-dir", "--log-level", "--log-format"}
    help_text = commands["migrate"].format_help()
    for unused in ("--listen", "--metrics-listen", "--tls-cert-file", "--auth-tokens", "--pool-max-connections"):
        assert unused not in help_text
    assert _flags(commands["healthcheck"]) == {"--listen", "--timeout"}
    assert _flags(commands["check"]) == {"--database-url"}
    assert _flags(commands["purge"]) == {"--status", "--older-than", "--dry-run", "--json", "--database-url"}


def test_migrate_ignores_settings_it_does_not_use() -> None:
    # A variable only `serve` reads cannot stop `migrate`.
    args = build_parser().parse_args(["migrate", "--database-url", "postgresql://x/y"])
    settings = config.load(args, {"SAYIIR_LISTEN": "not an address"}, names=MIGRATE_SETTINGS)
    assert settings.database_url == "postgresql://x/y"
    with pytest.raises(config.ConfigError):
        config.load(args, {"SAYIIR_LISTEN": "not an address"})
