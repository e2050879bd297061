"""Where a model comes from, known before torch and transformers load: a local folder, the folder a pip package
ships (`package:NAME`), the hub, or the hub's local cache.

Each command that loads a model asks `require_model` first: offline, an id that is neither a folder nor in the
cache fails in about a second with the one line loading would give, instead of after seconds of imports (and,
without HF_HUB_OFFLINE, tens of seconds of the hub client's retries)."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from loraclf.errors import UserError

PACKAGE_PREFIX = "package:"


def resolve_model_path(name_or_path: str) -> str:
    """Map `package:NAME` to the model folder that pip package ships; pass others through."""
    if not name_or_path.startswith(PACKAGE_PREFIX):
        return name_or_path
    package = name_or_path[len(PACKAGE_PREFIX) :]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UserError(
            f"config model.name_or_path: python package {package!r} is not installed "
            f"(pip install {package.replace('_', '-')})"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise UserError(f"config model.name_or_path: package {package!r} has no model folder at {folder}")
    return str(folder)


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether the hub's host answers a TCP connection within a second and a half, asked once per process.

    Unreachable, the hub's client retries each file for tens of seconds before failing; loading from its cache
    alone (local_files_only) answers at once, from the cache or with the one-line error. Behind a proxy the
    direct connection says nothing, so it is not tried there."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True  # offline already answers at once; a proxy is trusted to reach the hub
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), 1.5).close()
    except OSError:
        return False
    return True


def hub_kwargs(name: str) -> dict:
    """from_pretrained's keywords for `name`: the cache alone where it is a hub id and the hub is out of reach."""
    return {} if Path(name).exists() or hub_reachable() else {"local_files_only": True}


def hub_error(what: str, name: str, exc: Exception | None = None) -> UserError:
    """The one line for a model (`what`: model, model config, tokenizer) that could not be loaded from `name`."""
    if Path(name).exists():
        return UserError(f"cannot load the {what} from folder {name}: {str(exc).splitlines()[0]}")
    reason = "the hub is out of reach, and it is not in the local cache" if _cache_only() else \
        f"the hub could not provide it ({type(exc).__name__})"
    return UserError(
        f"cannot load the {what} {name!r}: not a local folder, {reason}; offline, point --model.name_or_path "
        "at a local model folder"
    )


def require_model(name_or_path: str) -> str:
    """`name_or_path` resolved (`package:NAME` to its folder), once it can load: a folder, a hub id with the hub
    in reach, or one in the hub's local cache. Otherwise the one line that loading it would end in."""
    name = resolve_model_path(name_or_path)
    if not Path(name).exists() and _cache_only() and not _cached(name):
        raise hub_error("model", name)
    return name


def _cache_only() -> bool:
    """Whether only the hub's local cache can provide a model: HF_HUB_OFFLINE, or the hub out of reach."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or not hub_reachable()


def _cached(name: str) -> bool:
    """Whether the hub's local cache holds `name`'s config.json (every model folder has one)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid hub id (HFValidationError), e.g. a path that does not exist here
        return False
