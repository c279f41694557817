"""The request pipeline: one ordered list of steps, each run once per request.

The factory writes the list (`myapp/factory.py`, mirrored in docs/architecture.md). A step
is a plain function: it returns nothing to let the request go on, raises `AppError` to
end it with an enveloped error, or returns a response to answer without the view (an
idempotent replay). Later steps read what earlier ones left on `flask.g`. Finishers run in
order on every response, error answers included; cleanups run at teardown.

Routes declare what the pipeline must check for them (`caller_required`,
`feature_required`, `idempotency_required`, `carries_credentials`, `streaming`,
`accepts_ticket`). The declarations are
read only after the route has matched, so an unknown path or a wrong method is answered
before any guard runs, and no guard runs twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import NotFound
from werkzeug.routing import RequestRedirect

from myapp.core.context import Actor, current_actor
from myapp.core.errors import AppError

Step = Callable[[], Response | None]
Finisher = Callable[[Response], Response]
Cleanup = Callable[[BaseException | None], None]
View = TypeVar("View", bound=Callable[..., Any])

_POLICY_ATTRIBUTE = "route_policy"


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """What a route (one method of one endpoint) asks the pipeline to check."""

    caller: bool = False  # a verified, active user with an open login
    permission: str | None = None  # RBAC, 403 without it
    admin: bool = False  # only from ADMIN_ALLOWED_CIDRS when that is set
    feature: str | None = None  # feature flag that must be on for the caller
    idempotency_key: bool = False  # `Idempotency-Key` header required
    credentials: bool = False  # answers carry credentials: never stored, never cached
    streaming: bool = False  # streams its body or its answer: no admission slot, no replay
    ticket: bool = False  # also accepts a single-use ticket (`?ticket=`) instead of a token


PUBLIC = RoutePolicy()


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The ordered request steps, response finishers and teardown cleanups."""

    steps: Sequence[Step]
    finishers: Sequence[Finisher] = ()
    cleanups: Sequence[Cleanup] = ()


def install_pipeline(app: Flask, pipeline: Pipeline) -> None:
    """Run `pipeline` on every request of `app` (one hook of each kind, in list order)."""
    steps, finishers, cleanups = tuple(pipeline.steps), pipeline.finishers, pipeline.cleanups

    def run_steps() -> Response | None:
        for step in steps:
            answer = step()
            if answer is not None:
                return answer
        return None

    def finish(response: Response) -> Response:
        for finisher in finishers:
            response = finisher(response)
        return response

    def clean_up(error: BaseException | None) -> None:
        for cleanup in cleanups:
            cleanup(error)

    app.before_request(run_steps)
    app.after_request(finish)
    app.teardown_request(clean_up)


def declare(view: View, **rules: Any) -> View:
    """Add `rules` to the route policy `view` declares (kept by `functools.wraps`)."""
    current = getattr(view, _POLICY_ATTRIBUTE, PUBLIC)
    setattr(view, _POLICY_ATTRIBUTE, replace(current, **rules))
    return view


def caller_required(permission: str | None = None, *, admin: bool = False) -> Callable:
    """Declare that the route needs an authenticated caller (holding `permission`).

    The pipeline resolves and checks the caller before the view. The view itself only
    asserts that this happened: a route whose declaration got lost fails closed (500),
    it is never served anonymously.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if g.get("caller") is None:
                raise RuntimeError(f"{request.endpoint}: the pipeline resolved no caller")
            return view(*args, **kwargs)

        return declare(guarded, caller=True, permission=permission, admin=admin)

    return decorator


def feature_required(key: str) -> Callable[[View], View]:
    """Declare that feature flag `key` must be on for the caller (else 404)."""
    return lambda view: declare(view, feature=key)


def idempotency_required(view: View) -> View:
    """Declare that callers must send an `Idempotency-Key` (400 without one)."""
    return declare(view, idempotency_key=True)


def carries_credentials(view: View) -> View:
    """Declare an auth route: its answers are never kept for idempotent replays (a spent
    refresh token must always meet reuse detection) nor cached (`no-store`)."""
    return declare(view, credentials=True)


def streaming(view: View) -> View:
    """Declare a route that streams a large or long-lived body (uploads, downloads, event
    streams). It reads in autocommit mode and keeps neither a database connection nor its
    admission slot while it streams (a slow client would hold them for minutes), and takes
    no part in `Idempotency-Key` (replaying it would mean buffering the body)."""
    return declare(view, streaming=True)


def accepts_ticket(view: View) -> View:
    """Declare a route that browsers open without headers (`EventSource`): a single-use
    ticket in the query string stands in for the bearer token."""
    return declare(view, ticket=True)


def _handler(view: Callable, method: str) -> Callable | None:
    """The function that serves `method`: a MethodView's method, or the view itself."""
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return view
    name = method.lower()
    if name == "head" and not hasattr(view_class, "head"):
        name = "get"
    return getattr(view_class, name, None)  # None: Flask answers OPTIONS itself


def route_policy() -> RoutePolicy:
    """The policy of the matched route (public for unknown ones)."""
    view = current_app.view_functions.get(request.endpoint or "")
    handler = _handler(view, request.method) if view is not None else None
    return getattr(handler, _POLICY_ATTRIBUTE, PUBLIC)


def match_route() -> None:
    """Step: unknown path 404, wrong method 405, before anything else; never a redirect.

    Werkzeug would answer a redirect for some near misses (a missing trailing slash,
    doubled slashes); a redirect would run the guards twice and breaks CORS preflights,
    so the path as written is the only one served.
    """
    error = request.routing_exception
    if error is not None:
        raise NotFound() if isinstance(error, RequestRedirect) else error
    g.route_policy = route_policy()


def current_route_policy() -> RoutePolicy:
    """The policy `match_route` found for this request."""
    return g.get("route_policy", PUBLIC)


def feature_gate(is_enabled: Callable[[str, Actor], bool]) -> Step:
    """Step: 404 `FEATURE_DISABLED` when the route's flag is off for the caller."""

    def gate_feature() -> None:
        key = current_route_policy().feature
        if key and not is_enabled(key, current_actor()):
            raise AppError("FEATURE_DISABLED", f"The feature {key!r} is not enabled.")

    return gate_feature
