"""Values that cross the sandbox's boundary: arrays in JSON lines, read back with bounded memory.

Stage B's arguments go in as JSON, and its results come back on the runner's report descriptor,
one JSON object per line (``{"result": i, "values": [array, ...]}`` and the like). An array is
``{"dtype": "<f8", "shape": [...], "data": <base64 of its bytes>}``.

What comes back is written by the student's code, so the grader reads at most the sandbox's
report limit, skips lines that are too long or not JSON, and decodes an array only once its
declared dtype and shape agree with the bytes actually there, with at most :data:`MAX_VALUES`
values: a result cannot make the grader allocate more than it was sent (finding 5 of issue 17:
a 13.7 MB compressed ``.npz`` once made the grader allocate 3.4 GB). No pickle, no zip.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np

MAX_VALUES = 1_000_000  # values in one array
MAX_LINE_BYTES = 16 * 2**20
DTYPES = {"<f8": np.float64, "<i8": np.int64, "|b1": np.bool_}


def encode(array) -> dict:
    """A JSON-ready copy of a float64, int64 or bool array (anything else is converted to float64)."""
    array = np.asarray(array)
    if array.dtype.str not in DTYPES:
        array = array.astype(np.float64)
    return {
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode(),
    }


def decode(obj) -> np.ndarray:
    """The array ``obj`` describes; ValueError when it is malformed or larger than :data:`MAX_VALUES`."""
    if not isinstance(obj, dict) or obj.get("dtype") not in DTYPES:
        raise ValueError("not an array of float64, int64 or bool")
    shape = obj.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > 8
        or not all(isinstance(n, int) and 0 <= n <= MAX_VALUES for n in shape)
    ):
        raise ValueError("a malformed shape")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    dtype = np.dtype(DTYPES[obj["dtype"]])
    data = obj.get("data")
    if count > MAX_VALUES or not isinstance(data, str) or len(data) != 4 * -(-count * dtype.itemsize // 3):
        raise ValueError(f"declares {count} values that are not there (or more than {MAX_VALUES})")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data that is not base64") from None
    if len(raw) != count * dtype.itemsize:
        raise ValueError("data of the wrong length")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def lines(data: bytes) -> list[dict]:
    """The complete JSON objects among ``data``'s lines (a last line without a newline is incomplete)."""
    found = []
    for line in data.split(b"\n")[:-1]:
        if len(line) > MAX_LINE_BYTES:
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            found.append(value)
    return found
