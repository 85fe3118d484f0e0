"""Engine warnings reach Python's logging."""

import logging
import os

import cachu


def test_corrupt_database_is_logged_as_warning(tmp_path, caplog):
    cachu.configure(file_dir=tmp_path)
    (tmp_path / "test_logging_cache5min.db").write_bytes(os.urandom(8192))

    @cachu.cache(ttl=300, backend="file")
    def double(x: int) -> int:
        return x * 2

    with caplog.at_level(logging.WARNING):
        assert double(21) == 42
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(r.name.startswith("cachu") and "corrupt" in r.getMessage() for r in warnings), [
        (r.name, r.getMessage()) for r in caplog.records
    ]
    assert double(21) == 42
    assert cachu.cache_info(double).hits == 1
