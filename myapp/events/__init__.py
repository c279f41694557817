"""The caller's event stream (Server-Sent Events): job progress and notifications.

Not to be confused with `myapp.core.events`, the domain events services exchange through
the outbox: this package delivers events to people, over HTTP.
"""
