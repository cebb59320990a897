"""The capacity model (``python -m loadtest.capacity``) prints a plan that grows
the way the costs say it must."""

from __future__ import annotations

import pytest

from loadtest.capacity import Load, expected_distinct, main, plan


def test_the_examples_and_a_given_load_print_a_table(capsys):
    assert main([]) == 0
    assert main(["--users", "50000", "--msgs", "500", "--group-size", "10"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("| users |") == 2 and "| 50,000 | 30% |" in printed


def test_a_bad_load_is_refused_with_a_reason(capsys):
    with pytest.raises(SystemExit):
        main(["--users", "10", "--online", "1.5"])
    assert "online" in capsys.readouterr().err


def test_more_traffic_needs_more_workers_shards_and_writes():
    small = plan(Load(100_000, 0.3, 1.5, 1000, 4))
    large = plan(Load(1_000_000, 0.2, 2.0, 10_000, 20))
    assert large.workers > small.workers
    assert large.redis_shards > small.redis_shards
    assert large.rows_per_second == 10 * small.rows_per_second


def test_distinct_draws_saturate_at_the_number_of_bins():
    assert expected_distinct(1, 16) == pytest.approx(1.0)
    assert 15.9 < expected_distinct(200, 16) <= 16
