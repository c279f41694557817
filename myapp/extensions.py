"""Bare extension singletons. Only the app factory calls their `init_app`.

Importing this module connects to nothing and imports nothing of ours. The smorest `Api`
singleton lives in `myapp.core.api` because it is our subclass (envelope, error schema).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any
from weakref import WeakKeyDictionary

from flask_caching import Cache
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSession
from flask_talisman import Talisman
from sqlalchemy import Engine, MetaData

#: Stable constraint names, so Alembic autogenerate produces the same names everywhere.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Session flag: read in autocommit mode (set for GET/HEAD by `myapp.core.db`).
AUTOCOMMIT_READS = "autocommit_reads"
#: Sessions created while this is true start with `AUTOCOMMIT_READS` set (`myapp.core.db`
#: sets it per request, so a request that never touches the ORM creates no session).
autocommit_reads: ContextVar[bool] = ContextVar("autocommit_reads", default=False)
_autocommit_engines: WeakKeyDictionary[Engine, Engine] = WeakKeyDictionary()


class Session(FlaskSession):
    """Flask-SQLAlchemy's session; while `info[AUTOCOMMIT_READS]` is set it reads in
    autocommit mode, on the same pool (one round trip per read, no BEGIN/ROLLBACK)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if autocommit_reads.get():
            flag_autocommit_reads(self)

    def get_bind(self, *args: Any, **kwargs: Any) -> Any:
        """The usual engine, or its autocommit variant for read-only work."""
        engine = super().get_bind(*args, **kwargs)
        if not self.info.get(AUTOCOMMIT_READS) or not isinstance(engine, Engine):
            return engine
        variant = _autocommit_engines.get(engine)
        if variant is None:
            variant = engine.execution_options(isolation_level="AUTOCOMMIT")
            _autocommit_engines[engine] = variant
        return variant


def flag_autocommit_reads(session: Any) -> None:
    """Flag `session` to read in autocommit mode until a unit of work begins; what it
    read stays usable when its connection goes back (`expire_on_commit` off)."""
    session.info[AUTOCOMMIT_READS] = True
    session.expire_on_commit = False


db = SQLAlchemy(
    metadata=MetaData(naming_convention=NAMING_CONVENTION), session_options={"class_": Session}
)
migrate = Migrate()
jwt = JWTManager()
#: Per-route budgets only (login, refresh, register); the default budget of every request
#: is counted by `myapp.core.guards` in the same Redis round trip as the token denylist.
limiter = Limiter(key_func=get_remote_address)
cache = Cache()
cors = CORS()
talisman = Talisman()
socketio = SocketIO()
