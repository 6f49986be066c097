"""CONTROL documents become typed commands at the edge; one spelling rule for model ids, one max_length rule."""

from __future__ import annotations

import pytest

from lora_core.commands import (
    DEFAULT_MAX_LENGTH,
    MAX_QUERY_IDS,
    ListCommand,
    LoadCommand,
    QueryCommand,
    StatusCommand,
    UnloadCommand,
    check_max_length,
    model_id_or_as_given,
    normalize_model_id,
    parse_command,
)
from lora_core.errors import InvalidRequest

LIMIT = 512


@pytest.mark.parametrize(
    ("document", "command"),
    [
        ({"op": "load", "model_dir": "team/job/"}, LoadCommand("team/job", DEFAULT_MAX_LENGTH, False)),
        (
            {"op": "load", "model_dir": "./team//job", "max_length": 16, "reload": True},
            LoadCommand("team/job", 16, True),
        ),
        ({"op": "unload", "model_id": "team/./job"}, UnloadCommand("team/job")),
        ({"op": "unload", "model_id": "../x"}, UnloadCommand("../x")),  # names no model: model_not_loaded
        ({"op": "list"}, ListCommand()),
        ({"op": "list", "status": None, "limit": None, "offset": 0}, ListCommand()),
        ({"op": "list", "status": "unloaded", "limit": 0, "offset": 5}, ListCommand("unloaded", 0, 5)),
        ({"op": "query", "model_ids": ["team/job/", "team//job", "a"]}, QueryCommand(("team/job", "a"))),
        ({"op": "query", "model_ids": ["../x", "/etc", "a\u0000b", "a"]}, QueryCommand(("a",))),  # left out
        ({"op": "status", "extra": 1}, StatusCommand()),
    ],
)
def test_documents_become_typed_commands(document, command):
    assert parse_command(document, LIMIT) == command


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "CONTROL must be a JSON object"),
        ({"op": "drop"}, "unknown control op 'drop'"),
        ({"op": "load"}, "model_dir must be a string, got NoneType"),
        ({"op": "load", "model_dir": "../x"}, "model_dir must not contain '..'"),
        ({"op": "load", "model_dir": "x", "max_length": 1}, "max_length must be between 2 and 512, got 1"),
        ({"op": "load", "model_dir": "x", "max_length": 513}, "max_length must be between 2 and 512, got 513"),
        ({"op": "load", "model_dir": "x", "max_length": True}, "max_length must be an integer, got bool"),
        ({"op": "load", "model_dir": "x", "reload": "yes"}, "reload must be true or false"),
        ({"op": "unload", "model_id": ""}, "model_id must be a non-empty string"),
        ({"op": "unload", "model_id": 17}, "model_id must be a non-empty string"),
        ({"op": "list", "status": "busy"}, "status must be one of loaded, unloaded, got 'busy'"),
        ({"op": "list", "limit": -1}, "limit must be an integer >= 0, got -1"),
        ({"op": "list", "limit": 1.0}, "limit must be an integer >= 0"),
        ({"op": "list", "offset": True}, "offset must be an integer >= 0, got True"),
        ({"op": "list", "offset": None}, "offset must be an integer >= 0, got None"),
        ({"op": "query"}, "model_ids must be a non-empty list of strings"),
        ({"op": "query", "model_ids": []}, "model_ids must be a non-empty list of strings"),
        ({"op": "query", "model_ids": "a"}, "model_ids must be a non-empty list of strings"),
        ({"op": "query", "model_ids": ["a", 1]}, "model_ids must be a non-empty list of strings"),
        ({"op": "query", "model_ids": ["a"] * (MAX_QUERY_IDS + 1)}, f"the limit is {MAX_QUERY_IDS}"),
    ],
)
def test_bad_documents_are_refused_naming_the_field(document, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_command(document, LIMIT)


def test_the_default_max_length_respects_a_smaller_base():
    assert check_max_length(None, 128) == 128
    assert check_max_length(None, 4096) == DEFAULT_MAX_LENGTH


@pytest.mark.parametrize("spelling", ["team-a//job-17", "./team-a/job-17", "team-a/job-17/", "team-a/./job-17"])
def test_every_spelling_of_one_directory_is_one_model_id(spelling):
    assert normalize_model_id(spelling) == "team-a/job-17"
    assert model_id_or_as_given(spelling) == "team-a/job-17"


def test_an_id_that_spells_nothing_valid_stays_as_given_for_lookups():
    assert model_id_or_as_given("../x") == "../x"
    assert model_id_or_as_given("") == ""
