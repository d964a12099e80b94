"""Talking to a running reference server: the API client and the CLI commands."""

from .api import ApiClient, ApiError, Target

__all__ = ["ApiClient", "ApiError", "Target"]
