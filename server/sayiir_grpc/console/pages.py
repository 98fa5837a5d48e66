"""The console's pages and actions (aiohttp + Jinja2, no JavaScript).

Reads and actions go through the operator stores (`operator_queries`,
`operator_actions`), the code behind the WorkflowOperator service; who may
act is decided by the same role table as gRPC calls (`security.allowed`).
Every template autoescapes, so instance ids, errors and payloads are
always shown as text.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from multidict import MultiMapping

from sayiir_common.checks import InvalidField, check_text
from sayiir_common.codec import SnapshotCodec
from sayiir_common.errors import BackendError, NotFoundError
from sayiir_common.ids import DefinitionHash, TaskId
from sayiir_common.model import STATUS_NAMES
from sayiir_common.operator_model import (
    ActionParams,
    ActionResult,
    WorkflowAction,
    WorkflowFilter,
    parse_hex_id,
    parse_status,
    parse_time,
    rfc3339,
)
from sayiir_grpc.console.sessions import COOKIE, Session, Sessions
from sayiir_grpc.db import Database
from sayiir_grpc.security import Token, allowed, matching_token
from sayiir_grpc.stores import operator_actions as actions
from sayiir_grpc.stores import operator_queries as queries

ACT_METHOD = "/sayiir.v1.WorkflowOperator/ActOnWorkflows"
PAGE_SIZE = 50
HISTORY_SHOWN = 200
OUTPUT_SHOWN_BYTES = 2048
FILTER_FIELDS = (
    "definition",
    "task",
    "tag",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
    "error",
)
ACTIONS = {a.value: a for a in WorkflowAction}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION_KEY = web.RequestKey("sayiir_console_session", Session)


@web.middleware
async def _text_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every value a request carries ends up in a TEXT column or a query: one with a NUL
    is refused here, naming it, for every page and action at once (PostgreSQL cannot hold NUL)."""
    values: list[tuple[str, str]] = [("path", request.path), *request.query.items()]
    if request.method == "POST":
        values.extend((name, str(value)) for name, value in (await request.post()).items())
    for name, value in values:
        try:
            check_text(name, value)
        except InvalidField as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
    return await handler(request)


class Console:
    def __init__(self, db: Database, codec: SnapshotCodec, tokens: list[Token], *, secure_cookie: bool) -> None:
        self.db = db
        self.codec = codec
        self.tokens = tokens
        self.secure_cookie = secure_cookie
        self.sessions = Sessions()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("sayiir_grpc", "console/templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["when"] = _when
        self.templates.filters["hex"] = lambda value: "" if value is None else value.hex()
        self.templates.filters["short"] = lambda value: "" if value is None else value.hex()[:12]
        self.templates.globals["workflow_url"] = lambda instance_id: "/workflows/" + quote(instance_id, safe="")

    # -- plumbing -------------------------------------------------------------

    def application(self) -> web.Application:
        app = web.Application(middlewares=[_text_only, self._session_middleware], client_max_size=1024**2)
        app.add_routes(
            [
                web.get("/login", self.login_page),
                web.post("/login", self.login),
                web.post("/logout", self.logout),
                web.get("/", self.overview),
                web.get("/workflows", self.workflows),
                web.get("/workflows/{instance_id:.+}", self.workflow),
                web.get("/claims", self.claims),
                web.post("/act", self.act),
                web.post("/claims/release", self.release_claim),
            ]
        )
        return app

    @web.middleware
    async def _session_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        session = self.sessions.get(request.cookies.get(COOKIE))
        new_session = None
        if session is None and request.path != "/login":
            if self.tokens:
                raise web.HTTPSeeOther("/login")
            # No tokens configured: everyone has full access, but forms still need a CSRF token.
            session = new_session = self.sessions.create(None)
        if session is not None:
            request[SESSION_KEY] = session
        if request.method == "POST" and request.path != "/login":
            form = await request.post()
            assert session is not None
            if not session.csrf_ok(str(form.get("csrf", ""))):
                raise web.HTTPForbidden(text="the form is stale or forged (CSRF token mismatch); reload the page")
        response = await handler(request)
        if new_session is not None:
            self._set_cookie(response, new_session)
        return response

    def _set_cookie(self, response: web.StreamResponse, session: Session) -> None:
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", secure=self.secure_cookie, path="/")

    def _render(self, request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
        session: Session | None = request.get(SESSION_KEY)
        flash = None
        if session is not None:
            flash, session.flash = session.flash, None
        text = self.templates.get_template(name).render(
            session=session,
            can_act=session is not None and allowed(session.role, ACT_METHOD),
            signed_in=bool(self.tokens) and session is not None,
            role=None if session is None or session.role is None else session.role.value,
            flash=flash,
            path=request.path_qs,
            **context,
        )
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    def _require_operator(self, request: web.Request) -> Session:
        session: Session = request[SESSION_KEY]
        if not allowed(session.role, ACT_METHOD):
            raise web.HTTPForbidden(text="your role may look but not act (an operator token is needed)")
        return session

    # -- sign-in ----------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        if not self.tokens:
            raise web.HTTPSeeOther("/")
        return self._render(request, "login.html", error=None)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        presented = str(form.get("token", "")).strip().encode()
        token = matching_token(presented, self.tokens) if presented else None
        if token is None:
            return self._render(request, "login.html", status=401, error="unknown token")
        session = self.sessions.create(token.role)
        response = web.HTTPSeeOther("/")
        self._set_cookie(response, session)
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.drop(request[SESSION_KEY].id)
        response = web.HTTPSeeOther("/login" if self.tokens else "/")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- pages --------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.StreamResponse:
        summary = await queries.overview(self.db)
        oldest_age = None
        if summary.oldest_runnable_since is not None:
            oldest_age = _age(datetime.now(UTC) - summary.oldest_runnable_since)
        return self._render(
            request,
            "overview.html",
            statuses=[(name, summary.by_status.get(name, 0)) for name in STATUS_NAMES],
            total=sum(summary.by_status.values()),
            overview=summary,
            oldest_age=oldest_age,
        )

    async def workflows(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        try:
            where = _filter_from(query)
        except InvalidField as exc:
            return self._render(
                request,
                "workflows.html",
                status=400,
                error=str(exc),
                items=[],
                next_url=None,
                filter_query="",
                **_filter_context(query),
            )
        after = query.get("after") or None
        page = await queries.list_workflows(self.db, where, after, PAGE_SIZE)
        next_url = None
        if page.after is not None:
            next_url = "/workflows?" + urlencode([*_filter_pairs(query), ("after", page.after)])
        return self._render(
            request,
            "workflows.html",
            error=None,
            items=page.items,
            next_url=next_url,
            filter_query=urlencode(_filter_pairs(query)),
            **_filter_context(query),
        )

    async def workflow(self, request: web.Request) -> web.StreamResponse:
        instance_id = request.match_info["instance_id"]
        try:
            described = await queries.describe_workflow(self.db, self.codec, instance_id)
        except NotFoundError:
            return self._render(request, "missing.html", status=404, instance_id=instance_id)
        history = await queries.list_history(self.db, self.codec, instance_id, 0, HISTORY_SHOWN)
        heads = await queries.output_heads(self.db, instance_id, OUTPUT_SHOWN_BYTES)
        tasks = [
            (task, _shown_output(*heads.get(task.task_id, (b"", task.output_bytes))))
            for task in described.completed_tasks
        ]
        return self._render(
            request,
            "workflow.html",
            w=described.summary,
            d=described,
            history=history.items,
            more_history=history.after is not None,
            tasks=tasks,
        )

    async def claims(self, request: web.Request) -> web.StreamResponse:
        expired_only = request.query.get("expired") == "1"
        after = request.query.get("after") or None
        page = await queries.list_claims(self.db, None, expired_only, after, PAGE_SIZE)
        next_url = None
        if page.after is not None:
            next_url = "/claims?" + urlencode({"expired": "1" if expired_only else "", "after": page.after})
        return self._render(request, "claims.html", items=page.items, expired_only=expired_only, next_url=next_url)

    # -- actions -------------------------------------------------------------------

    async def act(self, request: web.Request) -> web.StreamResponse:
        """Confirm first (with the dry-run count), then act; back to where the operator came from."""
        session = self._require_operator(request)
        form = await request.post()
        action = ACTIONS.get(str(form.get("action", "")))
        if action is None:
            raise web.HTTPBadRequest(text="unknown action")
        back = _local(str(form.get("back", "/")))
        params = ActionParams(
            reason=str(form.get("reason", "")) or None,
            requested_by=str(form.get("requested_by", "")) or None,
            signal_name=str(form.get("signal_name", "")),
            payload=str(form.get("payload", "")).encode(),
        )
        instance_id = str(form.get("instance_id", ""))
        try:
            params.check(action)
            where = None if instance_id else _filter_from(form)
        except InvalidField as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        confirmed = form.get("confirm") == "yes"
        if instance_id:
            result = await actions.act_on_instances(
                self.db, self.codec, action, [instance_id], params, dry_run=not confirmed
            )
        else:
            assert where is not None
            if not confirmed:
                result, _ = await actions.act_on_filter(
                    self.db, self.codec, action, where, params, dry_run=True, after=None, batch_size=1
                )
            else:
                result = await _act_on_every_match(self.db, self.codec, action, where, params)
        if not confirmed:
            fields = [(k, str(v)) for k, v in form.items() if k not in ("csrf", "confirm")]
            return self._render(
                request, "confirm.html", action=action.value, matched=result.matched, fields=fields, back=back,
                instance_id=instance_id or None,
            )  # fmt: skip
        session.flash = (
            f"{action.value}: matched {result.matched}, applied {result.applied}, "
            f"skipped {result.skipped}, not found {result.not_found}"
        )
        if action is WorkflowAction.DELETE and instance_id:
            back = "/workflows"
        raise web.HTTPSeeOther(back)

    async def release_claim(self, request: web.Request) -> web.StreamResponse:
        session = self._require_operator(request)
        form = await request.post()
        instance_id = str(form.get("instance_id", ""))
        if form.get("confirm") != "yes":
            fields = [("instance_id", instance_id)]
            return self._render(
                request, "confirm.html", action="release the claim on", matched=1, fields=fields,
                back="/claims", instance_id=instance_id, post_to="/claims/release",
            )  # fmt: skip
        try:
            claim = await actions.release_claim(self.db, instance_id)
            session.flash = f"released {claim.worker_id}'s claim on {instance_id}"
        except BackendError as exc:
            session.flash = exc.message
        raise web.HTTPSeeOther("/claims")


async def _act_on_every_match(
    db: Database, codec: SnapshotCodec, action: WorkflowAction, where: WorkflowFilter, params: ActionParams
) -> ActionResult:
    total = ActionResult()
    after: str | None = None
    while True:
        result, after = await actions.act_on_filter(
            db, codec, action, where, params, dry_run=False, after=after, batch_size=500
        )
        total += result
        if after is None:
            return total


# -- helpers ------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    text = rfc3339(value)
    return "" if text is None else text.replace("T", " ").split(".")[0].removesuffix("Z") + "Z"


def _age(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _local(url: str) -> str:
    """Only a path on this site is a place to go back to."""
    return url if url.startswith("/") and not url.startswith("//") else "/"


def _filter_pairs(query: MultiMapping[Any]) -> list[tuple[str, str]]:
    pairs = [("status", str(s)) for s in query.getall("status", []) if s]
    pairs += [(name, str(query[name])) for name in FILTER_FIELDS if query.get(name)]
    return pairs


def _filter_context(query: MultiMapping[Any]) -> dict[str, Any]:
    return {
        "statuses": STATUS_NAMES,
        "chosen": {str(s) for s in query.getall("status", [])},
        "values": {name: str(query.get(name, "")) for name in FILTER_FIELDS},
    }


def _filter_from(query: MultiMapping[Any] | Mapping[str, Any]) -> WorkflowFilter:
    """The list's filter from a query string or a form; InvalidField names the field."""

    def text(name: str) -> str | None:
        value = str(query.get(name) or "").strip()
        return value or None

    def when(name: str) -> datetime | None:
        value = text(name)
        return None if value is None else parse_time(name, value)

    statuses = query.getall("status", []) if isinstance(query, MultiMapping) else []
    definition, task = text("definition"), text("task")
    return WorkflowFilter(
        statuses=tuple(parse_status("status", str(s)) for s in statuses if s),
        definition_hash=None if definition is None else DefinitionHash(parse_hex_id("definition", definition)),
        current_task_id=None if task is None else TaskId(parse_hex_id("task", task)),
        tag=text("tag"),
        created_after=when("created_after"),
        created_before=when("created_before"),
        updated_after=when("updated_after"),
        updated_before=when("updated_before"),
        error_contains=text("error"),
    )


def _shown_output(head: bytes, size: int) -> tuple[str, bool]:
    """The output as text to show (pretty-printed when it is JSON) and whether it was cut."""
    cut = size > len(head)
    if not cut:
        try:
            return json.dumps(json.loads(head), indent=2, ensure_ascii=False), False
        except (ValueError, UnicodeDecodeError):
            pass
    return head.decode("utf-8", "replace"), cut
