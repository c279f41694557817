"""The app's blob store: the backend `FILES_STORAGE` names, and its accessor.

- `local` (default): `myapp.core.blobs.LocalStorage` under `FILES_LOCAL_DIR`;
- `s3`: `myapp.core.s3.S3Storage` (bucket, prefix, endpoint, server-side encryption).
"""

from __future__ import annotations

import importlib

from flask import Flask, current_app

from myapp.core.blobs import LocalStorage, Storage
from myapp.settings import Settings

_EXTENSION = "myapp.storage"


def create_storage(settings: Settings) -> Storage:
    """The backend `FILES_STORAGE` names (creating it opens no connection)."""
    if settings.files_storage == "s3":
        # Imported only when chosen: boto3 is large, and the local backend needs none of it.
        s3 = importlib.import_module("myapp.core.s3")
        return s3.S3Storage.from_settings(settings)
    return LocalStorage(settings.files_local_dir, settings.files_chunk_bytes)


def init_storage(app: Flask, settings: Settings) -> Storage:
    """Give `app` its blob store."""
    store = create_storage(settings)
    app.extensions[_EXTENSION] = store
    return store


def storage() -> Storage:
    """The current app's blob store."""
    return current_app.extensions[_EXTENSION]
