"""The running app's settings: installed once by the factory, read with `current_settings()`."""

from __future__ import annotations

from flask import Flask, current_app

from myapp.settings import Settings

_EXTENSION = "myapp.settings"


def install_settings(app: Flask, settings: Settings) -> None:
    """Make `settings` the settings of `app` (the factory does, first thing)."""
    app.extensions[_EXTENSION] = settings


def current_settings() -> Settings:
    """The settings of the current app."""
    return current_app.extensions[_EXTENSION]
