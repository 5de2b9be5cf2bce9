"""In-process engines measured by the benchmark. Each exposes `open_engine(...)`
returning an object with `check(Check) -> bool` and `close()`."""
