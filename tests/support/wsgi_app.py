"""gunicorn entry point for tests: the real app plus the `/_test` routes."""

from gevent import monkey

monkey.patch_all()

from myapp import create_app  # noqa: E402
from tests.support.routes import register_test_routes  # noqa: E402

app = create_app()
register_test_routes(app)
