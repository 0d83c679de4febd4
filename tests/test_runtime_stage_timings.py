"""StageStats keeps a fixed window of recent samples per stage, so a days-long watch's memory stays flat."""

from __future__ import annotations

import threading

import pytest

from hep2edge.runtime.stage_timings import StageStats, percentile_table


def test_percentiles_cover_the_latest_window_and_n_counts_everything() -> None:
    stats = StageStats(window=100)
    for value in range(1, 1001):  # 1..1000 ms: the window keeps 901..1000
        stats.add("write", float(value))
    row = stats.percentiles()["write"]
    assert row["n"] == 1000 and row["window"] == 100
    assert row["p50"] == pytest.approx(950.5) and row["mean"] == pytest.approx(950.5)
    assert row["p99"] == pytest.approx(999.01)
    assert stats._samples["write"].values.nbytes == 100 * 8  # the buffer never grows
    assert percentile_table(stats.percentiles()).row_count == 1


def test_before_the_window_fills_only_the_samples_added_count() -> None:
    stats = StageStats(window=10)
    for value in (3.0, 1.0, 2.0):
        stats.add("read", value)
    row = stats.percentiles()["read"]
    assert row["n"] == row["window"] == 3 and row["p50"] == 2.0 and row["mean"] == pytest.approx(2.0)
    assert stats.percentiles().keys() == {"read"}
    with pytest.raises(ValueError, match="window"):
        StageStats(window=0)


def test_threads_adding_at_once_lose_no_sample() -> None:
    stats = StageStats(window=50)

    def work() -> None:
        for _ in range(2000):
            stats.add("infer", 1.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    row = stats.percentiles()["infer"]
    assert row["n"] == 8000 and row["window"] == 50 and row["p50"] == 1.0


def test_freed_heap_memory_is_handed_back_where_glibc_allows() -> None:
    import platform

    from hep2edge.runtime.heap import release_free_memory

    assert release_free_memory() == (platform.libc_ver()[0] == "glibc")
