"""Read named arrays from a user's file: ``.npz``, HDF5 (``.h5``/``.hdf5``) and MATLAB ``.mat``.

Every reader returns plain numpy arrays keyed by the names the caller asked for and
fails with :class:`~rantune.errors.InputError` (listing the names the file holds) for
an unknown name or an unreadable file.

Axis order
----------
- ``.npz`` and HDF5: the array as numpy/h5py stores it (C order).
- MATLAB ``.mat`` v4-v7 (``scipy.io.loadmat``) and v7.3 (an HDF5 file, read with
  h5py): the dimensions as MATLAB shows them, ``size(x)``. HDF5 keeps MATLAB arrays
  column-major, so a v7.3 array is transposed back. MATLAB has no 1-D arrays:
  ``[N, 1]`` and ``[1, N]`` vectors are flattened to ``[N]`` (see
  :data:`MATLAB_VECTOR_NAMES`).

Complex values: native complex dtypes, HDF5 compound types with fields ``r``/``i``
(h5py) or ``real``/``imag`` (MATLAB v7.3) become complex arrays.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from rantune.errors import InputError

SUFFIXES = {".npz": "npz", ".h5": "hdf5", ".hdf5": "hdf5", ".mat": "mat"}
COMPOUND_COMPLEX = (("r", "i"), ("real", "imag"))


def source_format(path: Path) -> str:
    """``npz``, ``hdf5``, ``mat`` or ``mat-v7.3`` for ``path`` (by suffix and content)."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path}: unsupported file type {path.suffix!r}; import a .npz, .h5/.hdf5 or .mat file"
        )
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; check the path")
    if kind == "mat":
        import h5py

        if h5py.is_hdf5(path):
            return "mat-v7.3"
    return kind


def _as_complex(array: np.ndarray) -> np.ndarray:
    """A compound ``(real, imag)`` record array as complex; any other array unchanged."""
    names = array.dtype.names
    if names is None:
        return array
    for real, imag in COMPOUND_COMPLEX:
        if set(names) == {real, imag}:
            return array[real] + 1j * array[imag]
    raise InputError(f"a compound array with fields {names} is not a numeric array")


def _keys_hint(available: list[str]) -> str:
    return ", ".join(sorted(available)) if available else "none"


def _read_npz(path: Path, names: dict[str, str]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        available = list(archive.files)
        _check_names(path, names, available)
        return {field: archive[key] for field, key in names.items()}


def _hdf5_datasets(handle) -> list[str]:
    import h5py

    found: list[str] = []

    def visit(name: str, item) -> None:
        if isinstance(item, h5py.Dataset) and not name.startswith("#refs#"):
            found.append(name)

    handle.visititems(visit)
    return found


def _read_hdf5(path: Path, names: dict[str, str], matlab: bool) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as handle:
        available = _hdf5_datasets(handle)
        _check_names(path, names, available)
        arrays = {}
        for field, key in names.items():
            dataset = handle[key]
            if dataset.dtype.kind in "OV" and dataset.dtype.names is None:
                raise InputError(
                    f"{path}: {key!r} holds {dataset.dtype} values (references, cells or "
                    "strings), not a numeric array"
                )
            array = _as_complex(dataset[()])
            arrays[field] = np.transpose(array) if matlab else array
    return arrays


def _read_mat(path: Path, names: dict[str, str]) -> dict[str, np.ndarray]:
    import scipy.io

    contents = scipy.io.loadmat(path)
    available = [key for key in contents if not key.startswith("__")]
    _check_names(path, names, available)
    return {field: contents[key] for field, key in names.items()}


def _check_names(path: Path, names: dict[str, str], available: list[str]) -> None:
    for field, key in names.items():
        if key not in available:
            raise InputError(
                f"{path}: no array named {key!r} (asked for {field}); the file holds: "
                f"{_keys_hint(available)}. Pass the right name (e.g. --csi-key)"
            )


def _flatten_matlab_vector(array: np.ndarray) -> np.ndarray:
    """MATLAB ``[N, 1]`` / ``[1, N]`` -> ``[N]``; other shapes unchanged."""
    if array.ndim == 2 and 1 in array.shape:
        return array.reshape(-1)
    return array


def read_arrays(
    path: Path, names: dict[str, str], vector_fields: tuple[str, ...] = ()
) -> tuple[dict[str, np.ndarray], str]:
    """Read the arrays ``names`` (``{field: name in the file}``) from ``path``.

    Parameters
    ----------
    path : a ``.npz``, ``.h5``/``.hdf5`` or ``.mat`` file.
    names : which array of the file fills which field; an HDF5 name may be a path
        inside the file (``"group/csi"``).
    vector_fields : fields that are 1-D ``[N]``; from MATLAB files their ``[N, 1]`` or
        ``[1, N]`` shape is flattened.

    Returns
    -------
    arrays : ``{field: array}`` as stored (dtype and shape unchecked; see
        :mod:`rantune.channels.importer` for validation).
    kind : ``npz``, ``hdf5``, ``mat`` or ``mat-v7.3``.

    Raises
    ------
    InputError
        Unsupported suffix, missing or unreadable file, an unknown array name (the
        message lists the names the file holds), or a non-numeric array.
    """
    path = Path(path)
    kind = source_format(path)
    try:
        if kind == "npz":
            arrays = _read_npz(path, names)
        elif kind == "hdf5":
            arrays = _read_hdf5(path, names, matlab=False)
        elif kind == "mat-v7.3":
            arrays = _read_hdf5(path, names, matlab=True)
        else:
            arrays = _read_mat(path, names)
    except InputError:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        NotImplementedError,
        zipfile.BadZipFile,
    ) as err:
        # numpy, h5py and scipy report unreadable, truncated or pickled content this way.
        raise InputError(f"cannot read {path} as a {kind} file: {err}") from err
    if kind.startswith("mat"):
        arrays = {
            field: _flatten_matlab_vector(array) if field in vector_fields else array
            for field, array in arrays.items()
        }
    return arrays, kind
