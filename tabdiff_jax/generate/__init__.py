"""Streamed, row-addressable batch generation: any number of rows in memory bounded by the part size.

Rows are cut on one grid: batch (or part) ``b`` holds global rows ``b * size .. (b + 1) * size - 1``
and is computed by one ``_sample_raw`` call of ``min(size, n)`` rows (trimmed at ``n``), so a part
has the same bytes whichever process, row range or resumed run computes it (one compiled shape).
Rows keep the sampling contract: row ``i`` depends only on ``(seed, i)``; a condition the model
cannot impose is met by rejection over the candidate stream (a row range then costs the candidates
before it, so split such a job by rows only with a conditional model).

A dataset folder (``sample_to(DIR, ...)``, ``tabdiff-jax sample RUN -n N -o DIR/``)::

    DIR/part-00000.parquet ...  rows_per_part rows each (the last fewer), one row group, written under
                                a hidden temporary name and renamed when complete
    DIR/_manifest.json          what the rows are (run fingerprint, model, seed, n, rows per part,
                                condition, chunk size, sampler options), the library version and
                                the complete parts (row range, bytes, sha256); the underscore keeps
                                pd.read_parquet(DIR) and other dataset readers off it

Re-running the same command skips the parts whose files are complete and checksums match; other
settings are refused. Several processes may fill one folder (``--part I --of K``): each writes its
parts, and the manifest is merged under a file lock, recomputed from the part files on disk.
"""

from tabdiff_jax.generate.dataset import (
                                         MANIFEST,
                                         model_fingerprint,
                                         part_name,
                                         sample_to,
                                         write_dataset,
)
from tabdiff_jax.generate.stream import (
                                         DEFAULT_ROWS_PER_PART,
                                         arrow_schema,
                                         check_range,
                                         part_range,
                                         raw_batches,
                                         sample_batches,
                                         write_file,
)

__all__ = ["DEFAULT_ROWS_PER_PART", "MANIFEST", "arrow_schema", "check_range", "model_fingerprint", "part_name",
           "part_range", "raw_batches", "sample_batches", "sample_to", "write_dataset", "write_file"]
