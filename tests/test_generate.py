"""Streamed, row-addressable, resumable batch generation (tabdiff_jax.generate).

Tiny models on a 200-row table, datasets of a few hundred rows in parts of 50: a K-way split of a
dataset is the one-process dataset byte for byte, a killed or damaged run resumes by writing only
the missing parts, other settings are refused in one line, the model is never asked for more than a
batch of rows at once, and single-file output equals the in-memory sample.
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tabdiff_jax import generate
from tabdiff_jax.cli import main
from tabdiff_jax.errors import ConfigError

N, PART = 300, 50


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame({
        "x": x.round(4),
        "count": rng.integers(0, 20, n).astype(np.int64),
        "colour": rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]),
        "size": rng.choice(["s", "l", None], n),
        "label": np.where(x + rng.normal(scale=0.5, size=n) > 0.2, "yes", "no"),
    })


MODELS = {
    "smote": ("SMOTE", {}, {}),
    "tabddpm": ("TabDDPM", dict(num_timesteps=8, hidden_dims=(16, 16), dim_t=16),
                dict(steps=20, batch_size=64)),
}


_FITTED: dict = {}


def _fitted(name):
    """One fit per model for the whole module."""
    import tabdiff_jax

    if name not in _FITTED:
        cls, options, fit = MODELS[name]
        _FITTED[name] = getattr(tabdiff_jax, cls)(**options).fit(_frame(), target="label", seed=0, progress=False, **fit)
    return _FITTED[name]


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return _fitted(request.param)


@pytest.fixture(scope="module")
def smote_run(tmp_path_factory):
    import tabdiff_jax

    run = tmp_path_factory.mktemp("smote_run")
    tabdiff_jax.SMOTE().fit(_frame(), target="label", seed=0, progress=False, run_dir=run)
    return run


def _bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*.parquet"))}


def _counting(monkeypatch, model):
    """Record the row count of every call of the model's ``_sample_raw``."""
    calls, original = [], model._sample_raw

    def wrapped(start, n, key, **kwargs):
        calls.append(n)
        return original(start, n, key, **kwargs)

    monkeypatch.setattr(model, "_sample_raw", wrapped)
    return calls


# ----------------------------------------------------------------------------- splits
def test_a_split_into_row_ranges_is_the_one_process_dataset_byte_for_byte(model, tmp_path):
    kw = dict(seed=5, rows_per_part=PART, chunk_size=PART)
    one = model.sample_to(tmp_path / "one/", N, **kw)
    assert one["complete"] and one["parts_written"] == list(range(6))
    single = _bytes(tmp_path / "one")
    assert len(single) == 6
    for k in (2, 4):  # 4 ranges of 6 parts: 1, 2, 1, 2 parts; ranges written out of order
        folder = tmp_path / f"split{k}/"
        for i in reversed(range(k)):
            start, stop = generate.part_range(i, k, N, PART)
            out = model.sample_to(folder, N, start=start, stop=stop, **kw)
            assert out["complete"] == (i == 0)
        assert _bytes(tmp_path / f"split{k}") == single
        manifest = json.loads((tmp_path / f"split{k}" / generate.MANIFEST).read_text())
        assert manifest["complete"] and [p["rows"] for p in manifest["parts"]] == [[i, i + PART] for i in range(0, N, PART)]
    whole = pd.read_parquet(tmp_path / "one")
    # the same compiled chunks as sample(): the frame equals the in-memory sample exactly
    pd.testing.assert_frame_equal(whole, model.sample(N, seed=5, chunk_size=PART))
    assert len(pd.read_parquet(tmp_path / "one" / "part-00003.parquet")) == PART


def test_parts_do_not_depend_on_n_or_the_range_asked(tmp_path):
    import tabdiff_jax

    model = tabdiff_jax.SMOTE().fit(_frame(), target="label", progress=False)
    model.sample_to(tmp_path / "a/", 280, seed=1, rows_per_part=PART)
    model.sample_to(tmp_path / "b/", 400, seed=1, rows_per_part=PART, start=100, stop=250)
    a, b = _bytes(tmp_path / "a"), _bytes(tmp_path / "b")
    assert sorted(b) == ["part-00002.parquet", "part-00003.parquet", "part-00004.parquet"]
    assert all(a[name] == b[name] for name in b)  # rows depend on (seed, row) only
    assert len(pd.read_parquet(tmp_path / "a" / "part-00005.parquet")) == 30  # the last part is shorter


# ----------------------------------------------------------------------------- resume
def test_a_killed_run_resumes_with_only_the_missing_parts(tmp_path, monkeypatch):
    model = _fitted("tabddpm")
    kw = dict(seed=2, rows_per_part=PART)
    model.sample_to(tmp_path / "clean/", N, **kw)
    clean = _bytes(tmp_path / "clean")

    original = model._sample_raw
    calls = []

    def dies_after_two(start, n, key, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill between parts
        calls.append(start)
        return original(start, n, key, **kwargs)

    monkeypatch.setattr(model, "_sample_raw", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        model.sample_to(tmp_path / "run/", N, **kw)
    folder = tmp_path / "run"
    manifest = json.loads((folder / generate.MANIFEST).read_text())
    assert [p["part"] for p in manifest["parts"]] == [0, 1] and not manifest["complete"]
    assert not list(folder.glob(".part-*"))  # no temporary file left behind
    monkeypatch.setattr(model, "_sample_raw", original)

    calls = _counting(monkeypatch, model)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.glob("part-*.parquet")}
    out = model.sample_to(folder, N, **kw)
    assert out["parts_written"] == [2, 3, 4, 5] and out["parts_kept"] == [0, 1] and len(calls) == 4
    assert all(folder.joinpath(name).stat().st_mtime_ns == t for name, t in mtimes.items())
    assert _bytes(folder) == clean

    # damage: one part deleted, one truncated, one with a flipped byte (same size): those three again
    (folder / "part-00001.parquet").unlink()
    data = (folder / "part-00003.parquet").read_bytes()
    (folder / "part-00003.parquet").write_bytes(data[: len(data) // 2])
    data = bytearray((folder / "part-00004.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "part-00004.parquet").write_bytes(bytes(data))
    calls.clear()
    out = model.sample_to(folder, N, **kw)
    assert out["parts_written"] == [1, 3, 4] and len(calls) == 3 and out["complete"]
    assert _bytes(folder) == clean
    again = model.sample_to(folder, N, **kw)
    assert again["parts_written"] == [] and len(calls) == 3


@pytest.mark.parametrize("change, word", [({"seed": 3}, "seed"), ({"n": 350}, "n"), ({"rows_per_part": 60}, "rows_per_part"),
                                          ({"condition": {"label": "yes"}}, "condition")])
def test_other_settings_in_the_same_folder_are_refused_in_one_line(tmp_path, change, word):
    import tabdiff_jax

    model = tabdiff_jax.SMOTE().fit(_frame(), target="label", progress=False)
    args = {"seed": 1, "n": N, "rows_per_part": PART}
    model.sample_to(tmp_path / "d/", args.pop("n"), **args)
    before = _bytes(tmp_path / "d")
    new = {"seed": 1, "n": N, "rows_per_part": PART, **change}
    with pytest.raises(ConfigError) as err:
        model.sample_to(tmp_path / "d/", new.pop("n"), **new)
    text = str(err.value)
    assert "\n" not in text and f"{word} " in text and "asked" in text
    assert _bytes(tmp_path / "d") == before
    other = tabdiff_jax.SMOTE(k_neighbors=3).fit(_frame(seed=1), target="label", progress=False)
    with pytest.raises(ConfigError, match="run "):  # another model: its fingerprint differs
        other.sample_to(tmp_path / "d/", N, seed=1, rows_per_part=PART)


# ----------------------------------------------------------------------------- memory
def test_the_model_is_never_asked_for_more_than_a_batch(monkeypatch, tmp_path):
    import tabdiff_jax

    model = tabdiff_jax.SMOTE().fit(_frame(), target="label", progress=False)
    calls = _counting(monkeypatch, model)
    n = 40 * PART  # 40 times a part
    batches = model.sample_batches(n, seed=0, rows_per_batch=PART)
    assert calls == []  # lazy: nothing drawn before the first batch is asked for
    sizes = [len(b) for b in batches]
    assert sizes == [PART] * 40 and calls == [PART] * 40
    calls.clear()
    model.sample_to(tmp_path / "d/", n, seed=0, rows_per_part=PART)
    assert calls == [PART] * 40
    calls.clear()
    out = model.sample_to(tmp_path / "x.parquet", n, seed=0, rows_per_part=PART, start=75, stop=1010)
    assert max(calls) == PART and out["rows"] == 935
    calls.clear()  # by rejection (a non-target column): candidates in batches too
    rows = list(model.sample_batches(n, seed=0, rows_per_batch=PART, condition={"colour": "blue"}))
    assert max(calls) == PART and max(map(len, rows)) == PART and sum(map(len, rows)) == n


# ----------------------------------------------------------------------------- files
def test_single_files_stream_the_in_memory_sample(model, tmp_path):
    full = model.sample(N, seed=7, chunk_size=PART)
    model.sample_to(tmp_path / "a.csv", N, seed=7, rows_per_part=2 * PART, chunk_size=PART)
    assert (tmp_path / "a.csv").read_bytes() == full.to_csv(index=False).encode()
    model.sample_to(tmp_path / "a.parquet", N, seed=7, rows_per_part=2 * PART, chunk_size=PART)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "a.parquet").metadata.num_row_groups == 3
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), full)
    model.sample_to(tmp_path / "r.csv", N, seed=7, rows_per_part=PART, chunk_size=PART, start=120, stop=230)
    assert (tmp_path / "r.csv").read_bytes() == full.iloc[120:230].to_csv(index=False).encode()


def test_batches_and_ranges_under_a_condition_equal_the_conditional_sample():
    import tabdiff_jax

    model = tabdiff_jax.SMOTE().fit(_frame(), target="label", progress=False)
    for condition in ({"label": "yes"}, {"colour": "blue"}):  # natively, and by rejection
        full = model.sample(N, seed=4, condition=condition)
        batches = list(model.sample_batches(N, seed=4, rows_per_batch=PART, condition=condition))
        pd.testing.assert_frame_equal(pd.concat(batches), full)
        part = pd.concat(model.sample_batches(N, seed=4, rows_per_batch=PART, start=70, stop=190, condition=condition))
        pd.testing.assert_frame_equal(part, full.iloc[70:190])
        assert [len(b) for b in model.sample_batches(N, seed=4, rows_per_batch=PART, start=70, stop=190,
                                                     condition=condition)] == [30, 50, 40]  # on the grid


# ----------------------------------------------------------------------------- CLI
def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_parts_by_k_processes_equal_one_process_and_refuse_in_one_line(capsys, smote_run, tmp_path):
    base = ["sample", smote_run, "-n", N, "--seed", 9, "--rows-per-part", PART, "--no-progress"]
    code, out, _ = _cli(capsys, *base, "-o", f"{tmp_path / 'one'}/")
    assert code == 0 and "wrote 6 parts" in out and "complete" in out
    # the run loaded by the CLI and the same fit in memory are one identity: Python resumes the CLI's folder
    assert _fitted("smote").sample_to(tmp_path / "one", N, seed=9, rows_per_part=PART)["parts_written"] == []
    for i in range(4):
        code, out, err = _cli(capsys, *base, "-o", f"{tmp_path / 'four'}/", "--part", i, "--of", 4)
        assert code == 0, err
    assert _bytes(tmp_path / "four") == _bytes(tmp_path / "one")
    code, out, _ = _cli(capsys, *base, "-o", f"{tmp_path / 'four'}/")  # a re-run: nothing to write
    assert code == 0 and "wrote 0 parts" in out and "kept 6" in out
    code, _, err = _cli(capsys, *[10 if a == 9 else a for a in base], "-o", f"{tmp_path / 'one'}/")
    assert code == 2 and err.count("\n") == 1 and "seed 9 (asked 10)" in err
    code, _, err = _cli(capsys, *base, "-o", f"{tmp_path / 'x'}/", "--rows", "10:100")
    assert code == 2 and err.count("\n") == 1 and "--rows 0:100" in err and not (tmp_path / "x").exists()
    code, _, err = _cli(capsys, *base, "-o", tmp_path / "r.csv", "--rows", "10:100")
    assert code == 0 and len(pd.read_csv(tmp_path / "r.csv")) == 90
    one = pd.read_parquet(tmp_path / "one")
    assert list(pd.read_csv(tmp_path / "r.csv")["colour"]) == list(one["colour"].iloc[10:100])
    code, _, err = _cli(capsys, *base, "-o", tmp_path / "y.csv", "--part", 4, "--of", 4)
    assert code == 2 and "below K" in err


def test_two_processes_at_once_fill_one_folder(smote_run, tmp_path):
    """Two CLI processes at the same time, each its half: the parts and a complete merged manifest."""
    base = [sys.executable, "-m", "tabdiff_jax.cli", "sample", str(smote_run), "-n", str(N), "--seed", "9",
            "--rows-per-part", str(PART // 2), "--no-progress", "-o", f"{tmp_path / 'two'}/"]
    procs = [subprocess.Popen(base + ["--part", str(i), "--of", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    _fitted("smote").sample_to(tmp_path / "one/", N, seed=9, rows_per_part=PART // 2)
    assert _bytes(tmp_path / "two") == _bytes(tmp_path / "one")
    manifest = json.loads((tmp_path / "two" / generate.MANIFEST).read_text())
    assert manifest["complete"] and len(manifest["parts"]) == 12 and manifest["source"] == str(smote_run)


def test_progress_shows_rows_per_second_and_time_left(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TABDIFF_PROGRESS_SECONDS", "0")  # a plain line at every batch (stderr is no terminal)
    _fitted("smote").sample_to(tmp_path / "d/", N, seed=0, rows_per_part=PART, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sample:")]
    assert len(lines) >= 6 and f"sample: {N}/{N} (100%)" in lines[-1]
    assert all("rows/s=" in line and "eta=" in line for line in lines)
