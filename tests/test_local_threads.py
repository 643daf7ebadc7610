"""The local engine's threads: BLAS limited to BLAS_THREADS while a local run runs (unless the environment
sets a count), and work handed to a background thread (the checkpoint's fingerprint) comes back, errors
included."""

from __future__ import annotations

import os
import threading

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from fedgc.app import runner


def _blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.fixture
def no_thread_settings(monkeypatch):
    for var in runner.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(var, raising=False)


def test_a_local_run_limits_blas_to_its_share_of_the_cores(no_thread_settings):
    if not _blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can see")
    assert max(os.cpu_count() or 1, runner.LOCAL_WORKERS) >= runner.BLAS_THREADS * runner.LOCAL_WORKERS
    more = runner.BLAS_THREADS + 1  # the tests' own setting is one thread: start from more than the run's
    with threadpool_limits(limits=more, user_api="blas"):
        assert _blas_threads() == {more}
        with runner.local_blas_threads():
            assert _blas_threads() == {runner.BLAS_THREADS}
        assert _blas_threads() == {more}


def test_an_explicit_thread_count_in_the_environment_is_left_alone(monkeypatch):
    if not _blas_threads():
        pytest.skip("no BLAS library that threadpoolctl can see")
    more = runner.BLAS_THREADS + 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", str(more))
    with threadpool_limits(limits=more, user_api="blas"), runner.local_blas_threads():
        assert _blas_threads() == {more}


def test_background_work_returns_its_result_or_its_error():
    seen = []
    ok = runner.in_background(lambda: seen.append(threading.current_thread().daemon) or 42)
    assert ok.result(timeout=10) == 42 and seen == [True]

    def fails():
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        runner.in_background(fails).result(timeout=10)
