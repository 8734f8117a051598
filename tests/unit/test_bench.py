"""The benchmark's own logic: percentiles, ratios, tables, option validation."""

from __future__ import annotations

import math

import pytest

from orchestrator._bench import main, mask_url
from orchestrator._bench._render import comparison_table, format_summary, render_table
from orchestrator._bench._stats import percentile, progress_deciles, ratio, summary


def test_percentile_interpolates_between_closest_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([10.0, 0.0], 0.99) == pytest.approx(9.9)
    assert percentile([5.0], 0.99) == 5.0
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_ratio_is_none_when_a_side_is_missing() -> None:
    assert ratio(300.0, 150.0) == 2.0
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert ratio(math.nan, 1.0) is None


def test_summary_and_deciles() -> None:
    assert summary([3.0, 1.0, 2.0, math.nan]) == (2.0, 1.0, 3.0)
    assert progress_deciles([10.0 + i for i in range(10)], 10.0) == [float(i) for i in range(10)]


def test_tables_align_and_show_ratios() -> None:
    table = render_table(["a", "bb"], [["x", "1"], ["yyy", "22"]])
    assert table.splitlines() == ["a    bb", "---  --", "x     1", "yyy  22"]
    assert format_summary([1.0, 3.0, 2.0], 0) == "2 [1-3]"
    text = comparison_table([{"process_jobs_s": 200.0}], {"peer": [{"process_jobs_s": 100.0}]})
    assert "2.00x" in text and "processing, jobs/s" in text


def test_mask_url_hides_the_password() -> None:
    assert mask_url("postgresql://u:secret@h:1/db") == "postgresql://u:***@h:1/db"
    assert mask_url(None) == "(none)"


@pytest.mark.parametrize("argv", [["-n", "0"], ["--concurrency", "x"], ["--lat-gap", "-1"], ["--worker", "thread"]])
def test_bad_option_values_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("orchestrator bench: error:")


def test_a_backlog_smaller_than_the_claims_take_exits_2_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    # No database named: had it started, it would have tried to reach one.
    argv = ["--scale-only", "--backlog", "100", "--claims", "10", "--concurrency", "10",
            "--database-url", "postgresql://u@127.0.0.1:1/x"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "orchestrator bench: error: --backlog 100 is fewer than the 150 queued rows that --claims 10 "
        "(+5 warm-up) claims of --concurrency 10 take"
    ]
    # Enough rows, or no scale figures asked for: it goes on (to the unreachable database).
    assert main([*argv, "--backlog", "150"]) == 6
    assert main(["--backlog", "1", "--database-url", "postgresql://u@127.0.0.1:1/x", "-n", "1"]) == 6


def test_help_names_units_for_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out
    for option in ("--jobs", "--concurrency", "--lat-gap", "--peers-dir", "--sql-floor", "--scale", "--json"):
        assert option in out
    assert "seconds" in out


def test_unreachable_database_names_the_url_and_exits_6(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--database-url", "postgresql://u:pw@127.0.0.1:1/postgres", "-n", "1"])
    err = capsys.readouterr().err
    assert code == 6
    assert "postgresql://u:***@127.0.0.1:1/postgres" in err and "pw@" not in err
