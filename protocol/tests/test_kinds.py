"""The per-type table is the single list of message types and their facts."""

from __future__ import annotations

from extjob.protocol import (
    FEATURES,
    KINDS,
    SEQUENCED_TYPES,
    TERMINAL_TYPES,
    TRANSITIONS,
    AttemptState,
    message_types,
    negotiate,
)


def test_msg_9_the_table_has_exactly_the_schema_types() -> None:
    assert set(KINDS) == set(message_types("worker"))


def test_replay_1_sequenced_types_derive_from_the_table() -> None:
    assert {"started", "progress", "log", "checkpoint", "completed", "failed"} == SEQUENCED_TYPES
    assert {"completed", "failed"} == TERMINAL_TYPES


def test_life_4_after_the_terminal_only_hello_is_in_the_table() -> None:
    assert set(TRANSITIONS[AttemptState.FINISHED]) == {"hello"}
    assert set(TRANSITIONS[AttemptState.RUNNING]) == set(KINDS)


def test_neg_2_requirements_are_closed_and_ordered() -> None:
    assert negotiate(FEATURES, FEATURES) == FEATURES
    assert negotiate(FEATURES, ["spool", "auth"]) == ("auth",)
    assert negotiate(["auth"], FEATURES) == ("auth",)
    assert negotiate(FEATURES, []) == ()
