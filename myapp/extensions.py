"""Bare extension singletons. Only the app factory calls their `init_app`.

Importing this module connects to nothing and imports nothing of ours. The smorest `Api`
singleton lives in `myapp.core.api` because it is our subclass (envelope, error schema).
"""

from flask import current_app
from flask_caching import Cache
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from flask_talisman import Talisman
from sqlalchemy import MetaData

#: Stable constraint names, so Alembic autogenerate produces the same names everywhere.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()
jwt = JWTManager()


def _caller_key() -> str:
    """Defer to the key function the app installed (`myapp.core.ratelimit.caller_key`)."""
    return current_app.extensions["ratelimit_key"]()


def _default_limit() -> str:
    """Read per request: the limiter is shared, the settings belong to the current app."""
    return current_app.extensions["settings"].ratelimit_default


limiter = Limiter(key_func=_caller_key, default_limits=[_default_limit])
cache = Cache()
cors = CORS()
talisman = Talisman()
socketio = SocketIO()
