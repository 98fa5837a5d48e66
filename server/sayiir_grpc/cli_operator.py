"""`sayiir-grpc workflows ...` and `sayiir-grpc claims ...`: the operator's
command line, a client of the WorkflowOperator service.

Exit status: 0 done; 1 a workflow not found, an action refused, or the
service unreachable (message on stderr); 2 a usage error (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc

from sayiir_common.checks import InvalidField
from sayiir_common.errors import BackendError, InvalidArgumentError, NotFoundError
from sayiir_common.ids import DefinitionHash, TaskId
from sayiir_common.operator_client import OperatorClient, connect_operator
from sayiir_common.operator_model import (
    ActionParams,
    ActionResult,
    ClaimInfo,
    HistoryEntry,
    WorkflowAction,
    WorkflowDescription,
    WorkflowFilter,
    WorkflowSummary,
    parse_hex_id,
    parse_status,
    parse_time,
    rfc3339,
)

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_LIMIT = 100
PAGE_SIZE = 100
# A bulk batch over a large table may take a while; the client's default is 30 s.
TIMEOUT_S = 60.0


class UsageError(Exception):
    """Bad flags or values: one line on stderr, exit 2."""


class Refused(Exception):
    """Not found or refused: the message on stderr, exit 1."""


# -- the parser ----------------------------------------------------------------


def _connection_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("connection")
    group.add_argument("--target", help=f"HOST:PORT of the service [env SAYIIR_TARGET, default {DEFAULT_TARGET}]")
    group.add_argument("--token", help="bearer token [env SAYIIR_TOKEN]")
    group.add_argument("--tls-ca", help="PEM CA bundle: connect over TLS, trusting it")
    group.add_argument("--tls-cert", help="PEM client certificate (mutual TLS)")
    group.add_argument("--tls-key", help="PEM key of the client certificate")
    return flags


def _filter_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("filters (every one given must match)")
    group.add_argument(
        "--status", action="append", default=[], help="InProgress, Completed, ... (or in_progress); repeatable"
    )
    group.add_argument("--definition", metavar="HEX", help="definition hash, 64 hex digits")
    group.add_argument("--task", metavar="HEX", help="current task id, 64 hex digits")
    group.add_argument("--tag", metavar="T", help="a tag of the current task")
    group.add_argument("--created-after", metavar="T", help="RFC 3339 time, e.g. 2026-12-01T10:00:00Z")
    group.add_argument("--created-before", metavar="T")
    group.add_argument("--updated-after", metavar="T")
    group.add_argument("--updated-before", metavar="T")
    group.add_argument("--error", metavar="TEXT", help="text the error message contains (any case)")
    return flags


def _bulk_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--dry-run", action="store_true", help="print how many workflows match; change nothing")
    flags.add_argument("--yes", action="store_true", help="act on every match without asking")
    flags.add_argument("--json", action="store_true", help="(the counts are always printed as JSON)")
    return flags


def add_commands(commands: Any) -> None:
    """Register `workflows` and `claims` on the top-level subcommands."""
    connection, filters, bulk = _connection_flags(), _filter_flags(), _bulk_flags()
    workflows = commands.add_parser("workflows", help="Find, inspect and act on workflows.")
    wf = workflows.add_subparsers(dest="operator_command", required=True, metavar="COMMAND")

    listing = wf.add_parser("list", parents=[connection, filters], help="List workflows matching the filters.")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"at most N (default {DEFAULT_LIMIT})")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    for name, text in (("describe", "One workflow in detail."), ("history", "A workflow's history versions.")):
        command = wf.add_parser(name, parents=[connection], help=text)
        command.add_argument("instance_id", metavar="ID")
        command.add_argument("--json", action="store_true")
    for name, verb in (("cancel", "Cancel"), ("pause", "Pause")):
        command = wf.add_parser(
            name, parents=[connection, filters, bulk], help=f"{verb} workflows by id, or every match of the filters."
        )
        command.add_argument("instance_ids", metavar="ID", nargs="*")
        command.add_argument("--reason", metavar="TEXT")
        command.add_argument("--requested-by", metavar="NAME")
    for name, verb in (("unpause", "Resume paused"), ("delete", "Delete")):
        command = wf.add_parser(
            name, parents=[connection, filters, bulk], help=f"{verb} workflows by id, or every match of the filters."
        )
        command.add_argument("instance_ids", metavar="ID", nargs="*")
    send = wf.add_parser("send-event", parents=[connection], help="Send an event to a workflow.")
    send.add_argument("instance_id", metavar="ID")
    send.add_argument("signal_name", metavar="NAME")
    send.add_argument("--payload", metavar="TEXT", default="", help="the event's payload (UTF-8 text)")
    send.add_argument("--json", action="store_true", help="(the counts are always printed as JSON)")

    claims = commands.add_parser("claims", help="Task claims held by workers.")
    cl = claims.add_subparsers(dest="operator_command", required=True, metavar="COMMAND")
    claim_list = cl.add_parser("list", parents=[connection], help="List live and expired claims.")
    claim_list.add_argument("--worker", metavar="W", help="only this worker's claims")
    claim_list.add_argument("--expired", action="store_true", help="only expired claims")
    claim_list.add_argument("--json", action="store_true", help="one JSON object per line")
    release = cl.add_parser("release", parents=[connection], help="Force-release the claim on a workflow.")
    release.add_argument("instance_id", metavar="ID")


# -- reading the flags -----------------------------------------------------------


def _read_file(flag: str, path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {path}: {exc.strerror}") from None


def workflow_filter(args: argparse.Namespace) -> WorkflowFilter:
    """The filter the flags describe; InvalidField names the flag."""

    def when(flag: str, value: str | None) -> Any:
        return None if value is None else parse_time(flag, value)

    return WorkflowFilter(
        statuses=tuple(parse_status("--status", s) for s in args.status),
        definition_hash=None
        if args.definition is None
        else DefinitionHash(parse_hex_id("--definition", args.definition)),
        current_task_id=None if args.task is None else TaskId(parse_hex_id("--task", args.task)),
        tag=args.tag,
        created_after=when("--created-after", args.created_after),
        created_before=when("--created-before", args.created_before),
        updated_after=when("--updated-after", args.updated_after),
        updated_before=when("--updated-before", args.updated_before),
        error_contains=args.error,
    )


def has_filter(args: argparse.Namespace) -> bool:
    names = ("definition", "task", "tag", "created_after", "created_before", "updated_after", "updated_before", "error")
    return bool(args.status) or any(getattr(args, n) is not None for n in names)


# -- output ----------------------------------------------------------------------


def _short(value: bytes | None) -> str:
    return "-" if value is None else value.hex()[:12]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _when(value: Any) -> str | None:
    return rfc3339(value)


def print_workflows(items: list[WorkflowSummary], as_json: bool) -> None:
    if as_json:
        for item in items:
            print(json.dumps(item.to_json()))
        return
    rows = [
        (
            w.instance_id,
            w.status,
            w.position,
            _short(w.current_task_id),
            _short(w.definition_hash),
            _when(w.updated_at),
            w.claimed_by,
            (w.error or "")[:60] or None,
        )
        for w in items
    ]
    print(table(("INSTANCE", "STATUS", "POSITION", "TASK", "DEFINITION", "UPDATED", "CLAIMED BY", "ERROR"), rows))


def print_description(value: WorkflowDescription, as_json: bool) -> None:
    if as_json:
        print(json.dumps(value.to_json()))
        return
    s = value.summary
    fields = [
        ("instance", s.instance_id),
        ("status", s.status),
        ("position", s.position),
        ("current task", None if s.current_task_id is None else s.current_task_id.hex()),
        ("definition", s.definition_hash.hex()),
        ("created", _when(s.created_at)),
        ("updated", _when(s.updated_at)),
        ("error", s.error),
        ("tags", ", ".join(s.task_tags) or None),
        ("priority", s.task_priority),
        ("claimed by", s.claimed_by),
        ("claim expires", _when(s.claim_expires_at)),
        ("history versions", value.history_versions),
    ]
    print(table(("FIELD", "VALUE"), fields))
    sections: list[tuple[str, Sequence[str], list[Sequence[object]]]] = [
        (
            "pending signals",
            ("KIND", "REASON", "REQUESTED BY", "AT"),
            [(p.kind, p.reason, p.requested_by, _when(p.requested_at)) for p in value.pending_signals],
        ),
        ("buffered events", ("NAME", "COUNT"), list(value.buffered_events.items())),
        (
            "completed tasks",
            ("TASK", "COMPLETED", "OUTPUT BYTES"),
            [(t.task_id.hex(), _when(t.completed_at), t.output_bytes) for t in value.completed_tasks],
        ),
        (
            "retry states",
            ("TASK", "ATTEMPTS", "NEXT RETRY", "LAST WORKER", "LAST ERROR"),
            [
                (r.task_id.hex(), r.attempts, _when(r.next_retry_at), r.last_failed_worker, r.last_error[:60])
                for r in value.retry_states
            ],
        ),
    ]
    for title, headers, rows in sections:
        print(f"\n{title}:" + ("" if rows else " none"))
        if rows:
            print(table(headers, rows))


def print_history(items: list[HistoryEntry], as_json: bool) -> None:
    if as_json:
        for item in items:
            print(json.dumps(item.to_json()))
        return
    rows = [(v.version, _when(v.created_at), v.status, v.position, v.size, v.sha256.hex()) for v in items]
    print(table(("VERSION", "CREATED", "STATUS", "POSITION", "SIZE", "SHA256"), rows))


def print_claims(items: list[ClaimInfo], as_json: bool) -> None:
    if as_json:
        for item in items:
            print(json.dumps(item.to_json()))
        return
    rows = [
        (c.instance_id, c.task_id.hex()[:12], c.worker_id, _when(c.expires_at), "yes" if c.expired else "no")
        for c in items
    ]
    print(table(("INSTANCE", "TASK", "WORKER", "EXPIRES", "EXPIRED"), rows))


def report(result: ActionResult, *, named: bool) -> None:
    """Print the counts; a missing workflow (or, when named, a refused one) fails the command."""
    print(json.dumps(result.to_json()))
    problems = []
    if result.not_found:
        problems.append(f"{result.not_found} workflow(s) not found")
    if named and result.skipped:
        problems.append(f"{result.skipped} workflow(s) refused the action in their current state")
    if problems:
        raise Refused("; ".join(problems))


# -- the commands ----------------------------------------------------------------


async def _list(ops: OperatorClient, args: argparse.Namespace) -> None:
    where = workflow_filter(args)
    if args.limit < 1:
        raise UsageError(f"--limit: must be 1 or more, got {args.limit}")
    items: list[WorkflowSummary] = []
    after: str | None = None
    while len(items) < args.limit:
        page = await ops.list_workflows(where, limit=min(PAGE_SIZE, args.limit - len(items)), after=after)
        items.extend(page.items)
        if page.after is None:
            break
        after = page.after
    print_workflows(items, args.json)


async def _describe(ops: OperatorClient, args: argparse.Namespace) -> None:
    print_description(await ops.describe_workflow(args.instance_id), args.json)


async def _history(ops: OperatorClient, args: argparse.Namespace) -> None:
    print_history([v async for v in ops.iter_history(args.instance_id)], args.json)


ACTIONS = {
    "cancel": WorkflowAction.CANCEL,
    "pause": WorkflowAction.PAUSE,
    "unpause": WorkflowAction.UNPAUSE,
    "delete": WorkflowAction.DELETE,
}


def _confirm(action: WorkflowAction, matched: int) -> bool:
    answer = input(f"{action.value} {matched} workflow(s)? [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


async def _act(ops: OperatorClient, args: argparse.Namespace) -> None:
    action = ACTIONS[args.operator_command]
    params = ActionParams(reason=getattr(args, "reason", None), requested_by=getattr(args, "requested_by", None))
    params.check(action)
    if args.instance_ids:
        if has_filter(args):
            raise UsageError("give workflow ids or filters, not both")
        result = await ops.act(action, list(dict.fromkeys(args.instance_ids)), params=params, dry_run=args.dry_run)
        report(result, named=True)
        return
    where = workflow_filter(args)
    if args.dry_run:
        report(await ops.act(action, where, params=params, dry_run=True), named=False)
        return
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"{action.value} by filter needs --yes (or --dry-run) when not run on a terminal")
        counted = await ops.act(action, where, params=params, dry_run=True)
        if not _confirm(action, counted.matched):
            raise Refused("nothing done")
    report(await ops.act(action, where, params=params), named=False)


async def _send_event(ops: OperatorClient, args: argparse.Namespace) -> None:
    params = ActionParams(signal_name=args.signal_name, payload=args.payload.encode())
    params.check(WorkflowAction.SEND_EVENT)
    report(await ops.act(WorkflowAction.SEND_EVENT, [args.instance_id], params=params), named=True)


async def _claims_list(ops: OperatorClient, args: argparse.Namespace) -> None:
    items = [c async for c in ops.iter_claims(worker_id=args.worker, expired_only=args.expired)]
    print_claims(items, args.json)


async def _claims_release(ops: OperatorClient, args: argparse.Namespace) -> None:
    try:
        await ops.release_claim(args.instance_id)
    except NotFoundError:
        report(ActionResult(matched=1, not_found=1), named=True)
    else:
        report(ActionResult(matched=1, applied=1), named=True)


COMMANDS: dict[tuple[str, str], Callable[[OperatorClient, argparse.Namespace], Awaitable[None]]] = {
    ("workflows", "list"): _list,
    ("workflows", "describe"): _describe,
    ("workflows", "history"): _history,
    ("workflows", "cancel"): _act,
    ("workflows", "pause"): _act,
    ("workflows", "unpause"): _act,
    ("workflows", "delete"): _act,
    ("workflows", "send-event"): _send_event,
    ("claims", "list"): _claims_list,
    ("claims", "release"): _claims_release,
}


async def _run(args: argparse.Namespace) -> None:
    command = COMMANDS[(args.command, args.operator_command)]
    root = _read_file("--tls-ca", args.tls_ca)
    chain = _read_file("--tls-cert", args.tls_cert)
    key = _read_file("--tls-key", args.tls_key)
    if (chain is None) != (key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    target = args.target or os.environ.get("SAYIIR_TARGET") or DEFAULT_TARGET
    token = args.token or os.environ.get("SAYIIR_TOKEN") or None
    async with connect_operator(
        target, token=token, root_certificates=root, certificate_chain=chain, private_key=key, timeout=TIMEOUT_S
    ) as ops:
        await command(ops, args)


def _fail(code: int, message: str) -> NoReturn:
    print(f"sayiir-grpc: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_run(args))
    except (UsageError, InvalidField, InvalidArgumentError) as exc:
        _fail(2, " ".join(str(exc).split()))
    except Refused as exc:
        _fail(1, str(exc))
    except BackendError as exc:
        code = exc.code.name if isinstance(exc.code, grpc.StatusCode) else exc.kind
        _fail(1, f"{code}: {exc.message}")
    except KeyboardInterrupt:
        return 130
    return 0
