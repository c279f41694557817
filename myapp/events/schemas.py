"""Event stream request and response bodies."""

from __future__ import annotations

import marshmallow as ma

from myapp.core.api import Schema


class TicketSchema(Schema):
    """A single-use ticket for `GET /v1/events/stream?ticket=`."""

    ticket = ma.fields.String(required=True)
    expires_in = ma.fields.Integer(required=True, metadata={"description": "seconds"})


#: OpenAPI: what the stream sends.
STREAM_DOC = {
    "parameters": [
        {
            "in": "header",
            "name": "Last-Event-ID",
            "schema": {"type": "string"},
            "description": "Resume after this event id (the `id:` of the last event seen)",
        },
        {
            "in": "query",
            "name": "ticket",
            "schema": {"type": "string"},
            "description": "Single-use ticket (`POST /v1/events/ticket`) instead of a token",
        },
    ],
    "responses": {
        "200": {
            "description": (
                "An endless `text/event-stream`. Each event has `id:` (resume point), "
                "`event:` (`job.progress`, `job.succeeded`, `job.failed`, `notification`) and "
                "`data:` (JSON). A comment line every `SSE_HEARTBEAT_SECONDS` keeps proxies "
                "from closing it. The server ends it when the token expires or the process "
                "shuts down; `EventSource` then reconnects with `Last-Event-ID`."
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
}
