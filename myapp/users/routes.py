"""`/v1/users`: the caller's profile and user administration; `/v1/auth/register`: sign-up.

Sign-up creates a user, so it lives here (on a blueprint of its own under `/v1/auth`).
"""

from __future__ import annotations

import uuid

from flask.views import MethodView

from myapp.core import permissions as perms
from myapp.core.api import Blueprint
from myapp.core.context import caller_record, current_actor
from myapp.core.idempotency import IDEMPOTENCY_KEY_PARAMETER
from myapp.core.paging import Page
from myapp.core.pipeline import carries_credentials, feature_required, idempotency_required
from myapp.core.ratelimit import setting
from myapp.extensions import limiter
from myapp.users import service
from myapp.users.schemas import (
    ExportStartedSchema,
    MePatchSchema,
    RegisterSchema,
    RolesSchema,
    UserCreateSchema,
    UserListArgs,
    UserPatchSchema,
    UserSchema,
    UserStatsSchema,
    present_user,
)

blp = Blueprint("users", __name__, url_prefix="/v1/users", description="Users")
registration_blp = Blueprint("registration", __name__, url_prefix="/v1/auth", description="Sign-up")


def _me() -> uuid.UUID:
    return uuid.UUID(current_actor().id)


@blp.route("/stats")
class Stats(MethodView):
    """Counts of users."""

    @blp.auth(perms.USERS_READ)
    @blp.response(200, UserStatsSchema)
    def get(self) -> dict:
        """Users by status and by role; cached, refreshed after any user change."""
        return service.user_stats()


@blp.route("/export")
class Export(MethodView):
    """CSV export of all users."""

    @feature_required("users.export")
    @blp.auth(perms.USERS_READ)
    @blp.response(202, ExportStartedSchema)
    def post(self) -> dict:
        """Start an export; follow it at `GET /v1/jobs/{jobId}` or on the event stream.

        The CSV becomes a file of the caller (`result.fileId`); phone numbers are masked
        unless the caller is an admin.
        """
        return {"job_id": service.start_export(actor=current_actor())}


@blp.route("/me")
class Me(MethodView):
    """The caller's own account."""

    @blp.auth()
    @blp.response(200, UserSchema)
    def get(self) -> dict:
        """The caller."""
        return present_user(caller_record(), current_actor())  # read with the caller

    @blp.auth()
    @blp.arguments(MePatchSchema)
    @blp.response(200, UserSchema)
    def patch(self, changes: dict) -> dict:
        """Change the caller's name or phone."""
        actor = current_actor()
        return present_user(service.update_user(user_id=_me(), changes=changes, actor=actor), actor)


@registration_blp.route("/register")
class Register(MethodView):
    """Sign-up."""

    @limiter.limit(setting("ratelimit_register"))
    @feature_required("auth.registration")
    @registration_blp.doc(security=[])
    @registration_blp.arguments(RegisterSchema)
    @registration_blp.response(201, UserSchema)
    @registration_blp.alt_response(404, response="NOT_FOUND", description="Registration is off")
    @registration_blp.alt_response(409, response="CONFLICT")
    @carries_credentials  # under /v1/auth: like every auth route, never stored nor cached
    def post(self, body: dict) -> dict:
        """Create an account with the `user` role."""
        return present_user(service.register(**body), current_actor())


@blp.route("")
class Users(MethodView):
    """All users."""

    @blp.auth(perms.USERS_READ)
    @blp.arguments(UserListArgs, location="query")
    @blp.response(200, UserSchema(many=True), page="any")
    def get(self, args: dict) -> Page:
        """List users: offset (`page`, `perPage`) or cursor (`cursor`, `limit`) paging."""
        actor = current_actor()
        page = service.list_users(query=service.UserQuery(**args), actor=actor)
        return Page(items=[present_user(u, actor) for u in page.items], meta=page.meta)

    @idempotency_required
    @blp.auth(perms.USERS_WRITE)
    @blp.doc(parameters=[IDEMPOTENCY_KEY_PARAMETER])
    @blp.arguments(UserCreateSchema)
    @blp.response(201, UserSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, body: dict) -> dict:
        """Create a user (default role `user`)."""
        return present_user(service.create_user(**body), current_actor())


@blp.route("/<uuid:user_id>")
class UserItem(MethodView):
    """One user."""

    @blp.auth()
    @blp.response(200, UserSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, user_id: uuid.UUID) -> dict:
        """A user: yourself, or anybody with `users:read`."""
        actor = current_actor()
        return present_user(service.get_user(user_id=user_id, actor=actor), actor)

    @blp.auth()
    @blp.arguments(UserPatchSchema)
    @blp.response(200, UserSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def patch(self, changes: dict, user_id: uuid.UUID) -> dict:
        """Change a user: your own name/phone, or profile and status with `users:write`."""
        actor = current_actor()
        return present_user(
            service.update_user(user_id=user_id, changes=changes, actor=actor), actor
        )

    @blp.auth(perms.USERS_DELETE, admin=True)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, user_id: uuid.UUID) -> None:
        """Soft-delete a user: hidden, cannot log in, restorable."""
        service.delete_user(user_id=user_id, actor=current_actor())


@blp.route("/<uuid:user_id>/restore")
class Restore(MethodView):
    """Undo a soft delete."""

    @blp.auth(perms.USERS_DELETE, admin=True)
    @blp.response(200, UserSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, user_id: uuid.UUID) -> dict:
        """Bring a soft-deleted user back."""
        actor = current_actor()
        return present_user(service.restore_user(user_id=user_id, actor=actor), actor)


@blp.route("/<uuid:user_id>/roles")
class Roles(MethodView):
    """A user's roles."""

    @blp.auth(perms.ROLES_WRITE, admin=True)
    @blp.arguments(RolesSchema)
    @blp.response(200, RolesSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def put(self, body: dict, user_id: uuid.UUID) -> dict:
        """Replace the roles; the user's existing tokens stop working."""
        user = service.set_roles(user_id=user_id, roles=body["roles"], actor=current_actor())
        return {"roles": user.role_names}
