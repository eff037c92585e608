"""The experiment's fault schedule (`--at WHEN FILE=VALUE`), parsed before anything runs."""

from __future__ import annotations

import pytest


def test_schedule_entries_are_checked_before_anything_runs():
    from cramfs.lab.experiment import parse_at

    e = parse_at("10s", "inject=ratio 4")
    assert (e.at, e.file, e.value, e.label) == (10.0, "inject", "ratio 4", "inject=ratio 4")
    assert parse_at("2.5", "warn_at=60%").at == 2.5
    for when, what in (("soon", "inject=clear"), ("-1s", "inject=clear"),
                       ("1s", "status=x"), ("1s", "bogus=1"), ("1s", "inject")):
        with pytest.raises(ValueError):
            parse_at(when, what)
