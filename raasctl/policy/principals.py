"""Who a statement names, and whether that is the request's principal.

Rules ("Principal" and "NotPrincipal" in the IAM User Guide):

* ``"*"`` and ``{"AWS": "*"}`` are the only wildcard principals; ``{"Service": "*"}`` or
  ``{"Federated": "*"}`` is a literal name that matches no principal.
* An account — ``"111122223333"`` or ``arn:aws:iam::111122223333:root`` — stands for the
  account: it matches every principal of that account, but it *delegates*: within the
  account such a grant takes effect only through the principal's own identity policies
  (:class:`Match.ACCOUNT`), while a statement naming the user, role or session itself grants
  on its own (:class:`Match.NAMED`). In a ``NotPrincipal`` an account exempts only the account
  itself, not its users and roles.
* A role ARN ``arn:aws:iam::A:role/path/Name`` matches the role and its sessions
  ``arn:aws:sts::A:assumed-role/Name/s`` (a session ARN carries no path, so the name is
  compared). A user ARN matches the user and the federated-user sessions
  (``arn:aws:sts::A:federated-user/x``, GetFederationToken) that user created, which the
  session ARN does not tell: the caller states it with the ``raasctl:SessionIssuer`` context
  key, else the match is unknown.
* ``*``/``?`` inside a principal ARN are not supported by AWS: such an entry matches no
  principal, and a warning says so.
* A request principal without ``:`` but with a ``.`` (``sns.amazonaws.com``) is a service and
  matches only ``"*"`` or its ``Service`` entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any

from raasctl.policy.model import ContextValue, PolicyError

_ACCOUNT_RE = re.compile(r"^\d{12}$")
_ARN_RE = re.compile(r"^arn:([^:]+):(iam|sts)::(\d{12}):(.+)$")
_SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*\.amazonaws\.com(\.cn)?$")
_KINDS = ("AWS", "Service", "Federated", "CanonicalUser")


class Match(Enum):
    NONE = "none"
    NAMED = "named"  # the principal itself, "*", or its role / issuing user
    ACCOUNT = "account"  # only through its account: delegates to identity policies
    UNKNOWN = "unknown"  # a federated session whose issuing user is not known


@dataclass(frozen=True)
class Identity:
    """A principal taken apart: ``kind`` is account, user, role, session, federated,
    service or other; ``name`` is the user or role name (the role for a session)."""

    kind: str
    text: str
    account: str | None = None
    partition: str | None = None
    name: str | None = None


@lru_cache(maxsize=4096)
def identify(principal: str) -> Identity:
    """What kind of principal ``principal`` is (an unrecognised one is ``other``)."""
    if _ACCOUNT_RE.match(principal):
        return Identity("account", principal, principal)
    if _SERVICE_RE.match(principal) or (":" not in principal and "." in principal):
        return Identity("service", principal)
    found = _ARN_RE.match(principal)
    if not found:
        return Identity("other", principal)
    partition, service, account, rest = found.groups()
    kind, _, path = rest.partition("/")
    if service == "iam" and rest == "root":
        return Identity("account", principal, account, partition)
    if service == "iam" and kind in ("user", "role") and path:
        return Identity(kind, principal, account, partition, path.rsplit("/", 1)[-1])
    if service == "sts" and kind == "assumed-role" and path.count("/") == 1:
        return Identity("session", principal, account, partition, path.split("/", 1)[0])
    if service == "sts" and kind == "federated-user" and path and "/" not in path:
        return Identity("federated", principal, account, partition, path)
    return Identity("other", principal, account, partition)


def principal_problem(principal: str) -> str | None:
    """Why ``principal`` cannot be a request's principal, or None when it can."""
    if identify(principal).kind != "other":
        return None
    return (
        f"{principal!r} is not a principal: expected an account id (111122223333), an IAM "
        "user or role ARN (arn:aws:iam::111122223333:role/name), a session ARN "
        "(arn:aws:sts::111122223333:assumed-role/name/session or .../federated-user/name) "
        "or a service (sns.amazonaws.com)"
    )


def account_of(arn_or_account: str | None) -> str | None:
    """The account of an ARN (its 5th colon-separated field) or of a bare account id."""
    if not arn_or_account:
        return None
    if _ACCOUNT_RE.match(arn_or_account):
        return arn_or_account
    parts = arn_or_account.split(":", 5)
    if len(parts) >= 5 and parts[0] == "arn" and parts[4]:
        return parts[4]
    return None


@dataclass(frozen=True)
class PrincipalSpec:
    """A statement's Principal or NotPrincipal, parsed."""

    everyone: bool = False
    accounts: frozenset[str] = frozenset()
    named: tuple[Identity, ...] = ()  # users, roles, sessions, federated users
    literal: frozenset[str] = frozenset()  # services, federated providers, other names
    ignored: tuple[str, ...] = ()  # entries AWS does not honour (wildcards in ARNs)


def strings(raw: Any, name: str, what: str) -> list[str]:
    values = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(v, str) for v in values):
        raise PolicyError(f"statement {name}: {what} must be a string or a list of strings")
    return values


def parse_principal(spec: Any, name: str) -> PrincipalSpec:
    if spec == "*":
        return PrincipalSpec(everyone=True)
    if not isinstance(spec, dict):
        raise PolicyError(f'statement {name}: Principal must be "*" or an object')
    everyone = False
    accounts: set[str] = set()
    named: list[Identity] = []
    literal: set[str] = set()
    ignored: list[str] = []
    for kind, raw in spec.items():
        if kind not in _KINDS:
            raise PolicyError(
                f"statement {name}: unknown principal type {kind!r} (expected {', '.join(_KINDS)})"
            )
        for entry in strings(raw, name, f"Principal {kind}"):
            if kind != "AWS":
                literal.add(entry)  # "*" here is a name, not a wildcard
            elif entry == "*":
                everyone = True
            elif "*" in entry or "?" in entry:
                ignored.append(entry)
            else:
                found = identify(entry)
                if found.kind == "account":
                    accounts.add(str(found.account))
                elif found.kind in ("user", "role", "session", "federated"):
                    named.append(found)
                else:
                    literal.add(entry)  # e.g. a unique id (AROA...): compared as written
    return PrincipalSpec(
        everyone, frozenset(accounts), tuple(named), frozenset(literal), tuple(ignored)
    )


def _same_identity(entry: Identity, caller: Identity) -> bool:
    """A user or role entry names the caller (compared by name: paths are not in sessions)."""
    return (
        entry.partition == caller.partition
        and entry.account == caller.account
        and entry.name == caller.name
    )


def _named(entry: Identity, caller: Identity, issuer: ContextValue | type[KeyError]) -> Match:
    if entry.kind in ("session", "federated"):
        return Match.NAMED if entry.text == caller.text else Match.NONE
    if entry.kind == "role" and caller.kind in ("role", "session"):
        return Match.NAMED if _same_identity(entry, caller) else Match.NONE
    if entry.kind == "user" and caller.kind == "user":
        return Match.NAMED if _same_identity(entry, caller) else Match.NONE
    if entry.kind == "user" and caller.kind == "federated" and entry.account == caller.account:
        if issuer is KeyError:
            return Match.UNKNOWN
        if not isinstance(issuer, str):
            return Match.NONE
        found = identify(issuer)
        return Match.NAMED if found.kind == "user" and _same_identity(entry, found) else Match.NONE
    return Match.NONE


def match_principal(
    spec: PrincipalSpec,
    principal: str,
    issuer: ContextValue | type[KeyError],
    whole_account: bool,
) -> Match:
    """How ``spec`` covers ``principal``. ``issuer`` is the federated session's creating user
    (``KeyError`` when not known); ``whole_account=False`` reads accounts as NotPrincipal
    does (the account itself only)."""
    if spec.everyone:
        return Match.NAMED
    caller = identify(principal)
    if principal in spec.literal:
        return Match.NAMED
    if caller.kind == "service":
        return Match.NONE
    best = Match.NONE
    for entry in spec.named:
        found = _named(entry, caller, issuer)
        if found is Match.NAMED:
            return found
        if found is Match.UNKNOWN:
            best = found
    if caller.account in spec.accounts:
        if caller.kind == "account":
            return Match.NAMED  # the account (its root) itself
        if whole_account:
            return Match.ACCOUNT if best is Match.NONE else best
    return best
