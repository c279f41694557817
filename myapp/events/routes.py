"""`/v1/events`: the caller's live event stream, and tickets to open it from a browser."""

from __future__ import annotations

from flask import Response, request
from flask.views import MethodView

from myapp.auth import service as auth
from myapp.core.api import Blueprint
from myapp.core.config import current_settings
from myapp.core.context import current_actor, current_credentials
from myapp.core.errors import AppError
from myapp.core.pipeline import accepts_ticket, streaming
from myapp.core.streams import is_stream_id, sse_body, stream_hub
from myapp.events.schemas import STREAM_DOC, TicketSchema

blp = Blueprint("events", __name__, url_prefix="/v1/events", description="Event stream (SSE)")


@blp.route("/ticket")
class Ticket(MethodView):
    """Tickets for `EventSource`."""

    @blp.auth()
    @blp.response(201, TicketSchema)
    def post(self) -> dict:
        """A single-use ticket (60 s) to open the stream without an `Authorization` header."""
        ticket, ttl = auth.issue_ticket(credentials=current_credentials())
        return {"ticket": ticket, "expires_in": ttl}


@blp.route("/stream")
class Stream(MethodView):
    """The caller's events."""

    @streaming
    @accepts_ticket
    @blp.auth()
    @blp.doc(**STREAM_DOC)
    def get(self) -> Response:
        """Events for the caller as they happen (Server-Sent Events); resumable."""
        settings = current_settings()
        last_id = request.headers.get("Last-Event-ID") or None
        if last_id is not None and not is_stream_id(last_id):
            raise AppError("BAD_REQUEST", "Last-Event-ID is not an event id of this stream.")
        subscription = stream_hub().subscribe(current_actor().id, last_id)
        body = sse_body(
            subscription,
            session_id=current_credentials().session_id,
            heartbeat=settings.sse_heartbeat_seconds,
            retry_ms=settings.sse_retry_ms,
            ends_at=current_credentials().expires_at,
        )
        response = Response(body, content_type="text/event-stream; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache, no-store"
        response.headers["X-Accel-Buffering"] = "no"
        response.direct_passthrough = True
        return response
