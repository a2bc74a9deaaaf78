"""The conversion floor for wide frames: pyarrow's own Table.to_pandas() and
Table.from_pandas() of the same frame, in this process, with no R at all."""

from __future__ import annotations

import os
import sys

import pyarrow as pa

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import WORKLOADS, bulk, emit, errors_as_na, make_wide, na  # noqa: E402


def main() -> None:
    results: dict = {w: na("no R here: the floor of wide-frame conversion only") for w in WORKLOADS}
    wide = make_wide()
    table = pa.Table.from_pandas(wide, preserve_index=False)
    errors_as_na(results, "wide_r2py", lambda: bulk(lambda: table.to_pandas()))
    errors_as_na(results, "wide_py2r", lambda: bulk(lambda: pa.Table.from_pandas(wide, preserve_index=False)))
    emit(results)


if __name__ == "__main__":
    main()
