"""Run timm's tests/test_models.py on botnet's models only: import botnet.models (registers them with timm),
restrict timm.list_models to our names (BOTNET_TIMM_MODELS=comma list, default all of ours), and
give the pretrained ones an offline Hugging Face cache holding randomly initialised timm-format files."""
import fnmatch
import os
import tempfile

os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="hf_cache_")  # before huggingface_hub reads them
os.environ["HF_HUB_OFFLINE"] = "1"
import timm
import timm.models
from botnet.models import register_timm_models

_orig, _orig_pre = timm.list_models, timm.list_pretrained
_ours = sorted(v for v in register_timm_models().values())
_want = os.environ.get("BOTNET_TIMM_MODELS")
if _want:
    _ours = [n for n in _ours if any(fnmatch.fnmatch(n, p) for p in _want.split(","))]


# timm's tests/test_models.py runs its two forward_intermediates tests on the models of the timm
# modules in FEAT_INTER_FILTERS; timm files our entry points under module "_timm" (botnet.models._timm).
# The list is read while the test file is imported, so it is extended here: a module filter that
# names timm's own ResNet and BoTNet modules (that list) also selects ours.
OUR_TIMM_MODULE = "_timm"
FEAT_INTER_MARKERS = {"resnet", "byoanet"}


def list_models(*args, **kwargs):
    module = kwargs.get("module")
    if module and not isinstance(module, str) and FEAT_INTER_MARKERS <= set(module):
        kwargs["module"] = [*module, OUR_TIMM_MODULE]
    names = _orig(*args, **kwargs)
    return [n for n in names if n.split(".")[0] in _ours]


def _fake_cache():
    import torch
    from safetensors.torch import save_file
    cache = os.environ["HF_HUB_CACHE"]
    from botnet.models.timm_botnets import PRETRAINED_CFGS
    for name, cfg in PRETRAINED_CFGS.items():
        if not cfg["hf_hub_id"] or f"botnet_{name}" not in _ours:
            continue
        sd = {k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}
        repo = os.path.join(cache, "models--" + cfg["hf_hub_id"].replace("/", "--"))
        snap = os.path.join(repo, "snapshots", "0" * 40)
        os.makedirs(snap, exist_ok=True)
        os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
        open(os.path.join(repo, "refs", "main"), "w").write("0" * 40)
        save_file(sd, os.path.join(snap, "model.safetensors"))


_fake_cache()
def list_pretrained(*args, **kwargs):
    return [n for n in _orig_pre(*args, **kwargs) if n.split(".")[0] in _ours]


timm.list_models = list_models
timm.list_pretrained = list_pretrained
timm.models.list_models = list_models


def pytest_collection_modifyitems(config, items):
    """Keep only tests of our models (a few timm tests hard-code one of timm's)."""
    keep = [it for it in items if not hasattr(it, "callspec") or "model_name" not in it.callspec.params
            or str(it.callspec.params["model_name"]).split(".")[0] in _ours]
    config.hook.pytest_deselected(items=[it for it in items if it not in keep])
    items[:] = keep
