"""The extensions and how a connection settles on them (SPEC 7.1, NEG-1..3)."""

from __future__ import annotations

from collections.abc import Collection

#: NEG-1: every extension, in an order where each comes after what it requires.
FEATURES = ("auth", "replay", "control", "spool", "checkpoint")

#: NEG-2: what each extension needs in force beside it. Everything needs
#: ``hello`` (auth); a spool file is applied by ``seq`` (REPLAY-5).
REQUIRES: dict[str, tuple[str, ...]] = {
    "auth": (),
    "replay": ("auth",),
    "control": ("auth",),
    "spool": ("auth", "replay"),
    "checkpoint": ("auth",),
}


def negotiate(offered: Collection[str], named: Collection[str]) -> tuple[str, ...]:
    """NEG-2: the extensions in force on a connection.

    Those the server ``offered`` and the worker ``named`` in its hello, less
    any whose requirement is not in force too (``spool`` without ``replay``).
    Names this version does not know are ignored (NEG-1).
    """
    chosen: list[str] = []
    for feature in FEATURES:  # requirements come first, so one pass settles it
        wanted = feature in offered and feature in named
        if wanted and all(needed in chosen for needed in REQUIRES[feature]):
            chosen.append(feature)
    return tuple(chosen)
