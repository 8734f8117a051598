"""``orchestrator token create|list|revoke``: the HTTP API's bearer tokens.

``create`` prints the new token once (only its hash is stored); with
``--json``, an object with ``token`` and ``id``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .._tokens import TokenInfo, TokenNotFound, create_token, list_tokens, revoke_token
from ._exits import EXIT_NOT_FOUND, EXIT_OK, CliError
from ._render import print_json, render_table
from ._session import plain_orchestrator, principal_from, run_session


def _when(moment: object) -> str:
    return "-" if moment is None else str(moment)


def render_tokens(tokens: Sequence[TokenInfo]) -> str:
    if not tokens:
        return "no tokens"
    rows = [
        [str(t.id), t.user_id, t.role, t.name or "-", _when(t.created_at), _when(t.expires_at),
         _when(t.revoked_at), _when(t.last_used_at)]
        for t in tokens
    ]  # fmt: skip
    return render_table(["id", "user", "role", "name", "created", "expires", "revoked", "last used"], rows)


def cmd_token(args: argparse.Namespace, extras: list[str]) -> int:
    orch = plain_orchestrator(args)
    if args.token_command == "create":
        principal = principal_from(args)
        secret, info = run_session(
            orch, lambda: create_token(orch.store, principal, name=args.name, expires_in=args.expires_in)
        )
        if args.json:
            print_json({"token": secret, "id": str(info.id), **info.model_dump(mode="json", exclude={"id"})})
        else:
            print(secret)
        return EXIT_OK
    if args.token_command == "list":
        tokens = run_session(orch, lambda: list_tokens(orch.store, args.org))
        if args.json:
            print_json([t.model_dump(mode="json") for t in tokens])
        else:
            print(render_tokens(tokens))
        return EXIT_OK
    try:
        revoked = run_session(orch, lambda: revoke_token(orch.store, args.token_id))
    except TokenNotFound as exc:
        raise CliError(f"not found: {exc}", EXIT_NOT_FOUND) from None
    if args.json:
        print_json(revoked.model_dump(mode="json"))
    else:
        print(f"token {revoked.id} revoked")
    return EXIT_OK
