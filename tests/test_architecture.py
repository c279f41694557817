"""The architecture holds: import contracts (import-linter) and modules that import alone."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import myapp
from tests.support.servers import uncovered_environ

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.fixture
def scratch_project(tmp_path) -> Path:
    """A copy of the package, config and contract type, to break on purpose."""
    shutil.copytree(
        ROOT / "myapp", tmp_path / "myapp", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "tests" / "support").mkdir(parents=True)
    for name in (
        "tests/__init__.py",
        "tests/support/__init__.py",
        "tests/support/import_contracts.py",
    ):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def append(module: Path, line: str) -> None:
    module.write_text(module.read_text() + f"\n{line}  # noqa\n")


def test_the_contracts_catch_a_bypassed_service_a_core_to_domain_import_and_a_cycle(
    scratch_project,
):
    package = scratch_project / "myapp"
    append(package / "auth" / "routes.py", "from myapp.users import models as _bypass")
    append(package / "core" / "guards.py", "from myapp.flags import service as _upwards")
    append(package / "audit" / "models.py", "from myapp.audit import service as _circle")
    result = lint_imports(scratch_project)
    assert result.returncode != 0
    assert "0 kept, 3 broken" not in result.stdout  # the devservices contract still holds
    assert "myapp.auth.routes -> myapp.users.models" in result.stdout
    assert "myapp.core.guards -> myapp.flags.service" in result.stdout
    assert "No import cycles" in result.stdout and "BROKEN" in result.stdout
    assert "3 broken" in result.stdout


def every_module() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(myapp.__path__, prefix="myapp.")
        if not info.name.endswith("__main__")  # runs the devservices CLI when imported
    )


#: Run in a fresh interpreter: load the third-party libraries once, then import each of our
#: modules in a forked child of that interpreter, where no module of ours is loaded yet.
#: Same verdict as `python -c "import myapp.x"` per module, at a fraction of the time.
IMPORT_EACH = """
import os, sys, traceback
import alembic, argon2, blinker, celery, cryptography, flask, flask_caching, flask_cors
import flask_jwt_extended, flask_limiter, flask_migrate, flask_smorest, flask_socketio
import flask_sqlalchemy, flask_talisman, gevent, jwt, kombu, limits, marshmallow, psycopg
import prometheus_client, prometheus_flask_exporter, pydantic, pydantic_settings, redis
import redbeat, sqlalchemy, sqlalchemy.orm, structlog, ulid, werkzeug
assert not any(name == "myapp" or name.startswith("myapp.") for name in sys.modules)
failures = 0
for module in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(module)
        except BaseException:
            sys.stderr.write(f"--- {module}\\n{traceback.format_exc()}")
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    failures += status != 0
sys.exit(1 if failures else 0)
"""


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    modules = every_module()
    assert len(modules) > 50 and "myapp.core.pipeline" in modules and "myapp.auth.caller" in modules
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, *modules],
        cwd=ROOT,
        env=uncovered_environ(),  # a coverage file per forked child would triple the time
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
