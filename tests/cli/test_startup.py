"""The `botnet` command starts fast: building its parser and printing any help imports no torch,
timm or torchvision (each costs seconds; docs/benchmarks.md, "CLI start-up", has the timings). The
check is on ``sys.modules`` of a fresh interpreter, not on a time, so a busy machine cannot fail it."""

import json
import subprocess
import sys

HEAVY = ("torch", "torchvision", "timm", "numpy", "PIL")

# every command and subcommand, each with --help, in one fresh interpreter; prints the exit codes
# and the heavy modules imported
_HELP_ALL = f"""
import contextlib, io, json, sys
from botnet.cli import build_parser, main

def commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action.choices, dict):  # a subparsers action: name -> parser
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from commands(sub, (*prefix, name))

codes = {{}}
for argv in [(), *commands(build_parser())]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            code = main([*argv, "--help"])
        except SystemExit as e:
            code = e.code
    codes[" ".join(argv)] = [code, out.getvalue().startswith("usage: botnet")]
print(json.dumps({{"codes": codes, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)


def test_import_and_parser_import_no_torch():
    r = _python("-c", "import json, sys, botnet, botnet.cli; botnet.cli.build_parser(); "
                      f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == []


def test_every_help_exits_0_and_imports_no_torch():
    r = _python("-c", _HELP_ALL)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["heavy"] == [], res["heavy"]
    codes = res["codes"]
    assert {"", "list", "profile", "train", "eval", "recipes", "predict", "attention", "export", "shards",
            "experiment", "experiment run"} <= set(codes)
    assert all(code == [0, True] for code in codes.values()), codes


def test_module_entry_point_help():
    r = _python("-m", "botnet", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: botnet") and "predict" in r.stdout, r.stderr[-2000:]


def test_lazy_names_of_the_package():
    """``import botnet`` is light, yet every public name and subpackage is there on first use."""
    r = _python("-c", "import json, sys, botnet\n"
                      "light = 'torch' not in sys.modules\n"
                      "names = {n: hasattr(botnet, n) for n in botnet.__all__}\n"
                      "print(json.dumps({'light': light, 'names': names, 'layers': botnet.layers.__name__,\n"
                      "                  'model': type(botnet.create_model('botnet_tiny', img_size=64)).__name__,\n"
                      "                  'missing': hasattr(botnet, 'no_such_name')}))")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res == {"light": True, "names": dict.fromkeys(res["names"], True), "layers": "botnet.layers",
                   "model": "ResNet", "missing": False}
    assert set(res["names"]) == {"NetCfg", "ResNet", "create_model", "list_models", "load_model", "__version__"}
