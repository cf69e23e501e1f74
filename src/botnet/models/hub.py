"""``pretrained=True``: find or fetch a model's published weights the way timm does.

The places, in order (the first two never touch the network):

1. the Hugging Face Hub cache (``huggingface_hub``: ``HF_HUB_CACHE`` / ``HF_HOME``, default
   ``~/.cache/huggingface/hub``): ``model.safetensors`` (or ``pytorch_model.bin``) of the config's
   ``hf_hub_id``, e.g. ``timm/botnet26t_256.c1_in1k``;
2. the torch hub cache (``torch.hub.get_dir()/checkpoints``, i.e. ``TORCH_HOME``): the file name of
   the config's GitHub release ``url``;
3. unless ``HF_HUB_OFFLINE=1``: download from the Hub into its cache, else from the URL into the
   torch hub cache. Each host is probed first (name lookup and one TCP connect, 5 s at most,
   skipped behind a proxy), so an offline machine fails at once, without huggingface_hub's retries.

When nothing works, ``PretrainedNotFound`` (a FileNotFoundError) says in one line which file to fetch
and where to put it (or to pass its path as ``pretrained=PATH``).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["PretrainedNotFound", "HF_FILES", "cached_file", "has_weights", "pretrained_file", "hf_url", "hf_cache_dir"]

log = logging.getLogger("botnet.hub")
HF_FILES = ("model.safetensors", "pytorch_model.bin")
PROBE_TIMEOUT_S = 5.0  # a host that does not answer a TCP connect within this is unreachable


class PretrainedNotFound(FileNotFoundError):
    """The weights are neither cached nor downloadable here; the message says what to fetch, and where."""


def hf_url(repo_id: str, filename: str = HF_FILES[0]) -> str:
    return f"https://huggingface.co/{repo_id}/resolve/main/{filename}"


def _torch_hub_path(url: str) -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def hf_cache_dir() -> str:
    """The Hugging Face Hub cache, read from the environment now (huggingface_hub reads it at import)."""
    return os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")


def _hf_cached(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in HF_FILES:
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir())
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def cached_file(cfg: dict) -> Path | None:
    """The cached weight file of a pretrained config (Hub cache, then torch hub cache), or None."""
    hit = _hf_cached(cfg["hf_hub_id"]) if cfg.get("hf_hub_id") else None
    if hit is None and cfg.get("url") and _torch_hub_path(cfg["url"]).is_file():
        hit = _torch_hub_path(cfg["url"])
    return hit


def _short(e: BaseException, limit: int = 160) -> str:
    """``e`` as one line of at most about ``limit`` characters, cut at a word boundary."""
    text = " ".join(str(e).split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(e).__name__}: {text}"


def _unreachable(url: str) -> str | None:
    """Why the host of ``url`` cannot be reached (name lookup and one TCP connect, at most
    PROBE_TIMEOUT_S), or None when it answers or a proxy is configured (the proxy decides). Probing
    first makes an offline machine fail at once, instead of after huggingface_hub's retries."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as e:
        return f"{parts.hostname} cannot be reached: {e.strerror or type(e).__name__}"


def _download(cfg: dict) -> Path:
    errors = []
    if cfg.get("hf_hub_id"):
        why = _unreachable(hf_url(cfg["hf_hub_id"]))
        try:
            if why:
                raise ConnectionError(why)
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(cfg["hf_hub_id"], HF_FILES[0], cache_dir=hf_cache_dir()))
        except Exception as e:  # no network, no huggingface_hub, a proxy ...
            errors.append(why or _short(e))
    if cfg.get("url"):
        import torch.hub

        dst = _torch_hub_path(cfg["url"])
        why = _unreachable(cfg["url"])
        try:
            if why:
                raise ConnectionError(why)
            dst.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(cfg["url"], str(dst), progress=False)
            return dst
        except Exception as e:
            errors.append(why or _short(e))
    raise OSError("; ".join(errors) or "no source")


def _not_found(name: str, cfg: dict, why: str) -> PretrainedNotFound:
    hub_dir = hf_cache_dir()
    where = [f"{hf_url(cfg['hf_hub_id'])} into the Hugging Face cache {hub_dir} "
             f"(huggingface-cli download {cfg['hf_hub_id']} {HF_FILES[0]})"] if cfg.get("hf_hub_id") else []
    if cfg.get("url"):
        where.append(f"{cfg['url']} to {_torch_hub_path(cfg['url'])}")
    return PretrainedNotFound(f"{name}: pretrained weights are not cached here and could not be fetched ({why}); "
                              f"fetch {' or '.join(where)}, or pass the file as pretrained=PATH (botnet eval: --weights PATH)")


def has_weights(cfg: dict | None) -> bool:
    """Whether a pretrained config names published weights (a Hub id or a URL)."""
    return bool(cfg) and bool(cfg.get("hf_hub_id") or cfg.get("url"))


def pretrained_file(name: str, cfg: dict) -> Path:
    """The weight file of ``name`` (its pretrained config ``cfg``, ``has_weights(cfg)``): cached, else downloaded."""
    hit = cached_file(cfg)
    if hit is not None:
        return hit
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise _not_found(name, cfg, "HF_HUB_OFFLINE is set")
    try:
        path = _download(cfg)
    except OSError as e:
        raise _not_found(name, cfg, str(e)) from None
    log.info("%s: fetched %s", name, path)
    return path
