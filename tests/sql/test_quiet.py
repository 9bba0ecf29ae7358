"""sqlglot's logger during the harness's parses: at ERROR, restored after, and not set when already ERROR
(setting a level clears every logger's cache)."""

from __future__ import annotations

import logging

import pytest

from harness.sql.quiet import LOGGER, sqlglot_errors_only


@pytest.fixture
def sqlglot_logger():
    logger = logging.getLogger(LOGGER)
    saved = logger.level
    yield logger
    logger.setLevel(saved)


def test_the_level_is_error_inside_and_restored_after(sqlglot_logger):
    sqlglot_logger.setLevel(logging.WARNING)
    with sqlglot_errors_only():
        assert sqlglot_logger.level == logging.ERROR
    assert sqlglot_logger.level == logging.WARNING


def test_the_level_is_restored_after_an_error(sqlglot_logger):
    sqlglot_logger.setLevel(logging.NOTSET)
    with pytest.raises(ValueError), sqlglot_errors_only():
        raise ValueError("parse failed")
    assert sqlglot_logger.level == logging.NOTSET


def test_a_logger_already_at_error_is_not_set_again(sqlglot_logger, monkeypatch):
    sqlglot_logger.setLevel(logging.ERROR)
    calls: list[int] = []
    monkeypatch.setattr(type(sqlglot_logger), "setLevel", lambda self, level: calls.append(level))
    with sqlglot_errors_only():
        assert sqlglot_logger.level == logging.ERROR
    assert calls == []
