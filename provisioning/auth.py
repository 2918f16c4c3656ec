"""Admin accounts: password hashing (argon2id), roles and their scopes (sign-in delays:
provisioning/limits.py).

Roles
  ``national``      every kit and school; the only role that edits the fleet default config
                    and adds admins
  ``departement``   the schools of one département (scope = its code, e.g. ``75`` or ``2A``)
  ``school``        one school's kits (scope = the school id, e.g. its UAI ``0751234A``)
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import BadRequest, Forbidden
from .fleet import Kit

ROLES = ("national", "departement", "school")
EMAIL = re.compile(r"^[^@\s]{1,100}@[^@\s]{1,100}$")
SCOPE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DEPARTEMENT = re.compile(r"^[0-9AB]{2,3}$")  # 75, 2A, 971
MIN_PASSWORD = 10

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("timing equaliser for unknown accounts")


def check_new_user(email: str, role: str, scope: str, password: str) -> None:
    if not EMAIL.match(email):
        raise BadRequest("not an email address")
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}")
    if role == "national" and scope:
        raise BadRequest("a national admin has no scope")
    if role != "national" and not SCOPE.match(scope):
        raise BadRequest(f"a {role} admin needs a scope (département code or school id)")
    if role == "departement" and not DEPARTEMENT.match(scope):
        raise BadRequest("a département is two or three characters: 75, 2A, 971")
    check_password(password)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"the password must have at least {MIN_PASSWORD} characters")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant work whether or not the account exists."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password_off_loop(stored_hash: str | None, password: str) -> bool:
    """argon2 takes tens of milliseconds by design: never on the event loop."""
    return await asyncio.to_thread(verify_password, stored_hash, password)


@dataclass(frozen=True, slots=True)
class Admin:
    id: int
    email: str
    role: str
    scope: str
    csrf: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Admin:
        return cls(row["id"], row["email"], row["role"], row["scope"], row.get("csrf", ""))

    def sees_school(self, school: dict[str, Any]) -> bool:
        if self.role == "national":
            return True
        if self.role == "departement":
            return bool(school["departement"] == self.scope)
        return bool(school["id"] == self.scope)

    def sees_kit(self, kit: Kit) -> bool:
        if self.role == "national":
            return True
        if self.role == "departement":
            return kit.departement == self.scope
        return kit.school_id == self.scope

    def require_school(self, school: dict[str, Any] | None) -> dict[str, Any]:
        if school is None or not self.sees_school(school):
            raise Forbidden("that school is not in your scope")  # also for unknown ones
        return school

    def require_national(self) -> None:
        if self.role != "national":
            raise Forbidden("only a national admin can do this")

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "role": self.role, "scope": self.scope}
