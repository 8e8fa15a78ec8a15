"""Bring your own encoder: load ``model.encoder`` (an entry point) and check its contract.

``model.encoder`` names a factory as ``package.module:factory`` (importable on
``sys.path``: an installed package, or a folder on ``PYTHONPATH``) or as
``/path/to/file.py:factory``. The factory is called as
``factory(num_antennas=A, num_subcarriers=S)`` (or ``factory()`` if it takes no
arguments) under the run's seed and must return an ``nn.Module`` meeting
:class:`rantune.model.interface.Encoder`; :func:`build_encoder` checks that contract on
a probe batch before anything trains. ``model.checkpoint`` (optional) is a
``.safetensors`` file of the module's ``state_dict`` (:func:`save_encoder_weights`
writes one), loaded strictly.

>>> encoder = build_encoder("my_pkg.encoders:build", 16, 32, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from rantune.errors import InputError
from rantune.fileio import atomic_write_bytes, atomic_write_json, sha256_file
from rantune.model.interface import TokenLayout, token_layout

ENTRY_HINT = "write model.encoder as package.module:factory or /path/to/file.py:factory"


def _split(entry: str) -> tuple[str, str]:
    module, sep, attribute = entry.strip().rpartition(":")
    if not sep or not module or not attribute.isidentifier():
        raise InputError(f"model.encoder={entry!r} is not an entry point: {ENTRY_HINT}")
    return module, attribute


def _import_file(path: Path, entry: str):
    if not path.is_file():
        raise InputError(f"model.encoder={entry!r}: file {path} not found ({ENTRY_HINT})")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"rantune_custom_encoder_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_module(name: str, entry: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if name == missing or name.startswith(missing + "."):  # the module itself, not a
            raise InputError(  # dependency that fails inside it
                f"model.encoder={entry!r}: no module named {missing!r}; install it, add its "
                "folder to PYTHONPATH, or give a file path (/path/to/file.py:factory)"
            ) from None
        raise


def load_factory(entry: str) -> Callable[..., object]:
    """The callable ``entry`` names.

    Raises
    ------
    InputError
        If ``entry`` is malformed, its module or file does not exist, or it has no such
        callable attribute (the message lists the callables it has).
    """
    module_name, attribute = _split(entry)
    if module_name.endswith(".py"):
        module = _import_file(Path(module_name).expanduser(), entry)
    else:
        module = _import_module(module_name, entry)
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        found = sorted(
            n
            for n, v in vars(module).items()
            if callable(v)
            and not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
        )
        what = "has no attribute" if factory is None else "has a non-callable"
        raise InputError(
            f"model.encoder={entry!r}: {module_name} {what} {attribute!r}; its callables: "
            f"{found or 'none'}"
        )
    return factory


def _call(factory: Callable[..., object], entry: str, num_antennas: int, num_subcarriers: int):
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: call it plainly
        return factory()
    kwargs = {"num_antennas": num_antennas, "num_subcarriers": num_subcarriers}
    for candidate in (kwargs, {}):
        try:
            signature.bind(**candidate)
        except TypeError:
            continue
        return factory(**candidate)
    raise InputError(
        f"model.encoder={entry!r}: the factory takes {signature}; it must accept "
        "num_antennas and num_subcarriers keyword arguments, or none"
    )


@torch.no_grad()
def check_encoder(
    encoder: nn.Module, num_antennas: int, num_subcarriers: int, entry: str = ""
) -> TokenLayout:
    """Check ``encoder`` against the contract on a seeded probe batch ``[2, 2, A, S]``.

    Returns its :class:`TokenLayout`; raises :class:`InputError` naming what is wrong
    (not a module, no ``d_model`` / ``grid``, outputs of the wrong kind or shape).
    """
    label = f"model.encoder={entry!r}" if entry else f"encoder {type(encoder).__name__}"
    if not isinstance(encoder, nn.Module):
        raise InputError(
            f"{label} returned {type(encoder).__name__}, not a torch.nn.Module: the factory "
            "must return the encoder module"
        )
    layout = token_layout(encoder, num_antennas, num_subcarriers)
    rows, cols = num_antennas // layout.patch_antennas, num_subcarriers // layout.patch_subcarriers
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, num_antennas, num_subcarriers, generator=generator)
    x = x / x.flatten(1).norm(dim=1)[:, None, None, None]  # unit Frobenius norm per sample
    was_training = encoder.training
    encoder.eval()
    try:
        out = encoder(x)
    finally:
        encoder.train(was_training)
    d = layout.d_model
    expected = f"(cls [2, {d}], tokens [2, {rows * cols}, {d}])"
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise InputError(
            f"{label}: forward of a [2, 2, {num_antennas}, {num_subcarriers}] batch returned "
            f"{type(out).__name__}; expected a pair {expected}"
        )
    shapes = tuple(tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in out)
    if shapes != ((2, d), (2, rows * cols, d)):
        raise InputError(
            f"{label}: forward of a [2, 2, {num_antennas}, {num_subcarriers}] batch returned "
            f"shapes {shapes}; expected {expected} (d_model={d}, grid=({rows}, {cols}))"
        )
    if any(t.dtype != torch.float32 or not bool(torch.isfinite(t).all()) for t in out):
        raise InputError(f"{label}: forward must return finite float32 tensors")
    return layout


def load_encoder_weights(encoder: nn.Module, path: Path | str) -> None:
    """Load a ``.safetensors`` state dict into ``encoder`` (strict on keys and shapes);
    a card ``<path>.json`` with a ``sha256`` is checked first."""
    path = Path(path).expanduser()
    if path.suffix != ".safetensors" or not path.is_file():
        raise InputError(
            f"model.checkpoint={str(path)!r}: expected an existing .safetensors file of the "
            "custom encoder's state_dict"
        )
    card = path.with_suffix(".json")
    if card.is_file():
        digest = json.loads(card.read_text()).get("sha256")
        if digest and sha256_file(path) != digest:
            raise InputError(f"model.checkpoint {path} does not match the sha256 in {card.name}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise InputError(f"model.checkpoint {path} cannot be read ({err})") from err
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(
            f"model.checkpoint {path} does not fit {type(encoder).__name__}: {err}"
        ) from err


def save_encoder_weights(encoder: nn.Module, path: Path | str, card: dict | None = None) -> Path:
    """Write ``encoder``'s state dict as ``path`` (.safetensors) with a card (.json,
    holding its ``sha256``), both atomically; the file :func:`load_encoder_weights` reads."""
    path = Path(path)
    state = {k: v.detach().contiguous().clone() for k, v in encoder.state_dict().items()}
    atomic_write_bytes(path, save(state))
    atomic_write_json(
        path.with_suffix(".json"),
        {**(card or {}), "encoder": type(encoder).__name__, "sha256": sha256_file(path)},
    )
    return path


def build_encoder(
    entry: str, num_antennas: int, num_subcarriers: int, checkpoint: str = "", seed: int = 0
) -> nn.Module:
    """The custom encoder ``entry`` makes for CSI ``[A, S]``, checked, in eval mode.

    Parameters
    ----------
    entry : ``package.module:factory`` or ``/path/to/file.py:factory``.
    num_antennas, num_subcarriers : the input layout ``[B, 2, A, S]`` it will see.
    checkpoint : optional ``.safetensors`` weights (``""`` = the factory's init).
    seed : torch seed of the factory's initialisation (the global RNG is left as it was).
    """
    factory = load_factory(entry)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = _call(factory, entry, num_antennas, num_subcarriers)
    check_encoder(encoder, num_antennas, num_subcarriers, entry)
    if checkpoint:
        load_encoder_weights(encoder, checkpoint)
    return encoder.eval()
