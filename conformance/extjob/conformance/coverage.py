"""Coverage as data: what the suite tests of SPEC.md, and why it tests no more.

Every requirement id of SPEC.md is in exactly one of three groups:

- a **worker rule** the suite tests: the cases that test it are those that
  list it (:mod:`.cases`), plus every case for the rules the common checks
  apply (:data:`EVERY_CASE`); a violation may be reported under the id of the
  rule it shows as (:data:`REPORTED_AS`: an interleaved line is FRAME-1);
- a worker rule no run can observe (:data:`UNOBSERVABLE`, with the reason);
- a rule for the server, or a definition (:data:`NOT_THE_WORKERS`).

``extjob conformance --coverage`` prints the table; ``conformance/README.md``
includes it; the suite's own tests fail when an id is in no group, and when a
tested rule has no ``--break`` of the reference worker caught by its id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .cases import CASES

#: Rules the checks of every case apply (:data:`.checks.COMMON`).
EVERY_CASE = (
    "MSG-1", "MSG-10", "FRAME-1", "FRAME-2", "LIFE-1", "LIFE-4", "FIX-3", "FIX-4", "NEG-3",
    "AUTH-2", "NEG-2", "START-1", "HB-2", "EXIT-2", "EXIT-3", "LIMIT-1",
    "STREAM-1", "STREAM-2", "STREAM-3", "STREAM-4", "STREAM-5", "STREAM-6",
)  # fmt: skip

#: A rule whose violation shows as another rule's finding.
REPORTED_AS: dict[str, tuple[str, ...]] = {
    "LIFE-4": ("STREAM-3",),
    "TIME-1": ("STREAM-5",),
    "WRAP-1": ("MSG-6",),
    "WRAP-2": ("MSG-8", "EXIT-2"),
    "WRAP-3": ("FRAME-2",),
    "WRAP-4": ("FRAME-1",),
    "FIX-4": ("EXIT-2",),
    "MSG-2": ("CTRL-6", "CKPT-2"),
    "MSG-3": ("LIFE-1",),
    "CTRL-5": ("CTRL-6",),
    "TRANS-3": ("RECONNECT-1",),
    "RECONNECT-4": ("LIFE-3", "AUTH-2", "REPLAY-4"),
    "STREAM-2": ("LIFE-1",),
    "STREAM-4": ("REPLAY-4",),
}

#: Worker rules no conformance run can tell kept from broken.
UNOBSERVABLE = {
    "PAY-1": "the socket path is in the payload: a worker cannot connect before reading it",
    "FRAME-4": "servers send lines of at most 1 MiB (LIMIT-3); memory use is not observed",
}

_SERVER = "a rule for the server"
_DEFINES = "defines a message or field; every line is checked against its schema"
#: Rules the wrapper does not keep: the server's, or definitions.
NOT_THE_WORKERS = {
    **dict.fromkeys(("PAY-2", "PAY-3", "MSG-5", "MSG-9", "CTRL-1", "CTRL-2"), _DEFINES),
    **dict.fromkeys(("CTRL-3", "CTRL-4"), _DEFINES),
    **dict.fromkeys(
        (
            "PAY-4", "ENV-1", "ENV-3", "TRANS-2", "LIFE-2", "SRV-1", "SRV-2", "SRV-3", "SRV-4",
            "SRV-5", "SRV-6", "SRV-7", "SRV-8", "EXIT-1", "HB-1", "HB-3", "HB-4", "STALE-1",
            "STALE-2", "STALE-3", "TIMEOUT-1", "KILL-1", "TIME-2", "RECONNECT-5", "AUTH-1",
            "AUTH-3", "AUTH-5", "REPLAY-2", "REPLAY-5", "CANCEL-1", "CANCEL-4", "SPOOL-1",
            "SPOOL-3", "CKPT-3", "LIMIT-2",
        ),
        _SERVER,
    ),
}  # fmt: skip

#: In a checkout; an installed package without it knows the ids from the groups.
SPEC = Path(__file__).resolve().parents[3] / "protocol" / "SPEC.md"
_RULE = re.compile(r"^\*\*([A-Z]+-\d+)\*\* (.*?)(?=^\*\*[A-Z]+-\d+\*\*|^#|\Z)", re.M | re.S)


@dataclass(frozen=True)
class Row:
    requirement: str
    strength: str  #: MUST, SHOULD or MAY: the strongest word of the rule
    cases: tuple[str, ...]  #: the cases that test it ("every case" for the common checks)
    reported_as: tuple[str, ...]
    reason: str  #: why it is not tested here (empty when it is)


def spec_rules(spec: Path = SPEC) -> dict[str, str]:
    """Requirement id → its text, in SPEC order."""
    if not spec.exists():
        known = [*tested(), *UNOBSERVABLE, *NOT_THE_WORKERS]
        return dict.fromkeys(dict.fromkeys(known), "")
    return {m.group(1): m.group(2) for m in _RULE.finditer(spec.read_text(encoding="utf-8"))}


def _strength(text: str) -> str:
    return next((w for w in ("MUST", "SHOULD", "MAY") if w in text), "-")


def tested() -> dict[str, tuple[str, ...]]:
    """Requirement → the cases that test it."""
    out: dict[str, list[str]] = {}
    for case in CASES:
        for requirement in case.requirements:
            out.setdefault(requirement, []).append(case.id)
    for requirement in EVERY_CASE:
        out.setdefault(requirement, []).insert(0, "every case")
    return {k: tuple(v) for k, v in out.items()}


def table(spec: Path = SPEC) -> list[Row]:
    covered = tested()
    rows = []
    for requirement, text in spec_rules(spec).items():
        reason = UNOBSERVABLE.get(requirement) or NOT_THE_WORKERS.get(requirement, "")
        if requirement in covered:
            reason = ""
        rows.append(
            Row(
                requirement,
                _strength(text),
                covered.get(requirement, ()),
                REPORTED_AS.get(requirement, ()),
                reason,
            )
        )
    return rows


def unexplained(spec: Path = SPEC) -> list[str]:
    """Ids that are neither tested nor explained: each is a gap in the suite."""
    return [r.requirement for r in table(spec) if not r.cases and not r.reason]


def to_markdown(rows: list[Row]) -> str:
    out = [
        "| requirement | kind | tested by | reported as | not tested because |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cases = ", ".join(c if c == "every case" else f"`{c}`" for c in r.cases)
        out.append(
            f"| {r.requirement} | {r.strength} | {cases} | {', '.join(r.reported_as)} "
            f"| {r.reason} |"
        )
    return "\n".join(out) + "\n"
