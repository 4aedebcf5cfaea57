import atexit
import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (the project's real public tables)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests need ../shared/data beside the repository")
    return SHARED_DATA


# XLA's persistent compilation cache, one folder per test run: many tests build the same programs
# (the same model on the same small table) from new Python closures, which the in-memory cache of
# jax.jit does not share; identical programs are compiled once. TABDIFF_TEST_XLA_CACHE=0 turns it off.
if os.environ.get("TABDIFF_TEST_XLA_CACHE", "1") != "0":
    _XLA_CACHE = tempfile.mkdtemp(prefix="tabdiff-jax-tests-xla-")
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
