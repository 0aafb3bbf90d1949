"""Errors that reach clients.

An error has a wire code (``error``), a public ``error_description`` and an
HTTP status. Private detail goes to the log, never into the response.
"""

from __future__ import annotations


class PortalError(Exception):
    status_code: int = 400
    error: str = "invalid_request"
    description: str = "The request is not valid."

    def __init__(
        self,
        description: str | None = None,
        *,
        error: str | None = None,
        status_code: int | None = None,
    ) -> None:
        if description is not None:
            self.description = description
        if error is not None:
            self.error = error
        if status_code is not None:
            self.status_code = status_code
        super().__init__(f"{self.error}: {self.description}")

    def as_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class ValidationError(PortalError):
    """Bad input: which field, and what is wrong with it."""


class NotFound(PortalError):
    status_code = 404
    error = "not_found"
    description = "Not found."


class Conflict(PortalError):
    status_code = 409
    error = "conflict"


class ServiceUnavailable(PortalError):
    status_code = 503
    error = "temporarily_unavailable"
    description = "The service is temporarily unavailable; try again shortly."
