"""The [http] table."""

from __future__ import annotations

import pytest

from extjob.server.http import HttpSettings, SettingsError

TOKEN = "t" * 16


def test_defaults_are_loopback_and_the_token_comes_from_the_environment() -> None:
    settings = HttpSettings.from_table({}, {"EXTJOB_TOKEN": TOKEN})
    assert (settings.host, settings.port, settings.token) == ("127.0.0.1", 8765, TOKEN)


def test_token_env_names_the_variable_and_a_token_in_the_table_wins() -> None:
    assert HttpSettings.from_table({"token_env": "MINE"}, {"MINE": TOKEN}).token == TOKEN
    table = {"token": "u" * 16, "token_env": "MINE"}
    assert HttpSettings.from_table(table, {"MINE": TOKEN}).token == "u" * 16


@pytest.mark.parametrize(
    ("table", "environ", "complaint"),
    [
        ({}, {}, "no API token"),
        ({}, {"EXTJOB_TOKEN": "short"}, "at least 16 characters"),
        ({"port": 70000}, {"EXTJOB_TOKEN": TOKEN}, "[http] port"),
        ({"port": "80"}, {"EXTJOB_TOKEN": TOKEN}, "[http] port"),
        ({"host": ""}, {"EXTJOB_TOKEN": TOKEN}, "[http] host"),
        ({"event_history": 0}, {"EXTJOB_TOKEN": TOKEN}, "[http] event_history"),
        ({"tokn": "x"}, {"EXTJOB_TOKEN": TOKEN}, "unknown key(s) tokn"),
    ],
)
def test_bad_tables_are_refused_with_the_reason(
    table: dict[str, object], environ: dict[str, str], complaint: str
) -> None:
    with pytest.raises(SettingsError) as error:
        HttpSettings.from_table(table, environ)
    assert complaint in str(error.value)
