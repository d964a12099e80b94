"""The two kinds of protocol error (after h11's Local/Remote split).

A :class:`LocalProtocolError` means our own caller misused the API: a bug on
this side. A :class:`RemoteProtocolError` means the peer broke the protocol:
what the server logs and rejects, and what the conformance suite reports.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error the protocol core raises."""


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol forbids (e.g. encode NaN)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids.

    ``code`` is one of the CTRL-5 error codes (or ``invalid_payload``), ready
    to send back in an ``error`` message; ``requirement`` is the SPEC id of
    the rule broken; ``field`` names the offending field, if there is one.
    """

    def __init__(self, code: str, requirement: str, detail: str, field: str | None = None):
        super().__init__(f"{requirement}: {field + ': ' if field else ''}{detail}")
        self.code = code
        self.requirement = requirement
        self.detail = detail
        self.field = field
