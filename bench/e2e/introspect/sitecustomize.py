"""Loaded by a benchmark's server process (``bench.e2e.run --introspect``) through PYTHONPATH.

Only when ``BENCH_INTROSPECT_DIR`` is set: SIGUSR1 makes the process write what its memory
is made of, as seen from inside (bench/e2e/introspect/__init__.py reads it). With
``BENCH_TRACEMALLOC`` set too, tracemalloc traces from start-up (one frame), which costs
memory of its own: a run of its own, not the RSS run.
"""

import os

if os.environ.get("BENCH_INTROSPECT_DIR"):
    import signal

    if os.environ.get("BENCH_TRACEMALLOC"):
        import tracemalloc

        tracemalloc.start(1)

    def _on_signal(signum: int, frame: object) -> None:
        from bench.e2e.introspect import report_write

        report_write(os.environ["BENCH_INTROSPECT_DIR"])

    signal.signal(signal.SIGUSR1, _on_signal)
