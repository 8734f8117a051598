"""The library's errors as HTTP answers, one JSON shape for all of them.

Every error answer is ``{"error": CODE, "message": TEXT, "field": NAME}``:
``field`` names the offending input for 422 (``"payload.w"``, ``"kind"``,
``"limit"``...) and is ``null`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from .limits import BodyTooLarge
from .._errors import DatabaseUnavailable, InvalidInput, JobNotFound, NotAuthorized, UnknownJobKind


class ErrorBody(BaseModel):
    """What every error answer carries."""

    error: str
    message: str
    field: str | None = None


class Unauthenticated(Exception):
    """No token, or one that is unknown, expired or revoked."""


def error_response(status: int, code: str, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    body = ErrorBody(error=code, message=message, field=field)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)


def field_name(loc: Sequence[int | str], prefix: str = "") -> str:
    """``("items", 3, "w")`` as ``items[3].w``, after ``prefix``."""
    name = prefix
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def first_error(errors: Sequence[Any], prefix: str = "") -> tuple[str, str]:
    """The field and message of the first of pydantic's errors."""
    if not errors:
        return prefix or "body", "invalid"
    first = errors[0]
    loc = list(first.get("loc", ()))
    return field_name(loc, prefix), str(first.get("msg", "invalid"))


def install_error_handlers(app: FastAPI) -> None:
    """Map the library's exceptions to status codes (DESIGN.md, "Operations")."""

    async def unauthenticated(request: Request, exc: Exception) -> JSONResponse:
        return error_response(401, "unauthenticated", str(exc), **{"WWW-Authenticate": "Bearer"})

    async def not_authorized(request: Request, exc: Exception) -> JSONResponse:
        return error_response(403, "not_authorized", str(exc))

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    async def unknown_kind(request: Request, exc: Exception) -> JSONResponse:
        return error_response(422, "unknown_kind", str(exc), "kind")

    async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidInput)
        return error_response(422, "invalid_input", str(exc), exc.field)

    async def invalid_payload(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ValidationError)
        field, message = first_error(exc.errors(), "payload")
        return error_response(422, "invalid_payload", f"{field}: {message}", field)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if errors and errors[0].get("type") == "json_invalid":
            return error_response(400, "malformed_json", f"the body is not JSON: {errors[0].get('msg')}", "body")
        # FastAPI puts where the value came from first ("body", "query", "path").
        loc = list(errors[0].get("loc", ())) if errors else []
        field, message = first_error([{**errors[0], "loc": loc[1:] or loc}] if errors else [])
        return error_response(422, "invalid_input", f"{field}: {message}", field)

    async def too_large(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BodyTooLarge)
        return error_response(413, "body_too_large", exc.detail, "body", Connection="close")

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        return error_response(503, "database_unavailable", str(exc), **{"Retry-After": "1"})

    app.add_exception_handler(Unauthenticated, unauthenticated)
    app.add_exception_handler(NotAuthorized, not_authorized)
    app.add_exception_handler(JobNotFound, not_found)
    app.add_exception_handler(UnknownJobKind, unknown_kind)
    app.add_exception_handler(InvalidInput, invalid_input)
    app.add_exception_handler(ValidationError, invalid_payload)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(DatabaseUnavailable, unavailable)
    app.add_exception_handler(BodyTooLarge, too_large)
