"""Experiment specs: expansion of runs x grid, errors, and every shipped spec against the paper and
the model registry."""

from pathlib import Path

import pytest

from botnet.experiments import SpecError, list_specs, load_spec, parse_spec
from botnet.experiments.report import run_config
from botnet.models import is_model
from botnet.paper import PAPER_RESULTS, paper_result, paper_results
from botnet.recipes import recipe_names

SHIPPED = [name for name, _ in list_specs()]


def test_runs_cross_grid_in_order_with_common_overrides_first():
    exp = parse_spec({"base": "demo", "overrides": ["optim.epochs=1"], "runs": {"a": ["model.name=resnet50"],
                      "b": {"overrides": ["model.name=botnet50"], "paper": "BoT50", "base": "table10_canonical"}},
                      "grid": {"optim.lr": [0.1, 0.2], "run.seed": [0]}, "paper_table": "10"}, "x")
    assert [r.name for r in exp.runs] == ["a-optim.lr=0.1,run.seed=0", "a-optim.lr=0.2,run.seed=0",
                                          "b-optim.lr=0.1,run.seed=0", "b-optim.lr=0.2,run.seed=0"]
    assert exp.runs[1].overrides == ("optim.epochs=1", "model.name=resnet50", "optim.lr=0.2", "run.seed=0")
    assert exp.runs[2].base == "table10_canonical" and exp.runs[2].paper == ("10", "BoT50")
    assert exp.runs[0].paper is None


def test_grid_alone_and_list_values():
    exp = parse_spec({"base": "demo", "grid": {"model.kwargs.layers": [[1, 1, 1, 2]]}}, "g")
    assert [(r.name, r.overrides) for r in exp.runs] == [("model.kwargs.layers=1,1,1,2",
                                                          ("model.kwargs.layers=[1, 1, 1, 2]",))]


@pytest.mark.parametrize("data, message", [
    ({"base": "demo", "runs": {"a": "x"}}, "runs.a.overrides: expected a list of key=value"),
    ({"base": "nope", "runs": {"a": []}}, "base: recipe 'nope' not found"),
    ({"base": "demo", "bogus": 1}, "unknown key(s) ['bogus']"),
    ({"base": "demo", "runs": {"a": {"overides": []}}}, "runs.a: unknown key(s) ['overides']"),
    ({"base": "demo", "runs": {"a": {"paper": "R50"}}}, "names no table"),
    ({"base": "demo", "grid": {"optim.lr": []}}, "grid: expected a mapping of key -> non-empty list"),
    ({"runs": {"a": []}}, "runs.a: no recipe"),
    ({"base": "demo", "runs": {"a/b": [], "a_b": []}}, "run names ['a_b'] are not unique"),
])
def test_bad_specs_name_the_key(data, message):
    with pytest.raises(SpecError, match=None) as e:
        parse_spec(data, "s")
    assert message in str(e.value)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_runs_exist_and_match_paper_rows(name):
    """A spec that compares with the paper (a paper_metric: all but cpu_det_demo) has a paper row per
    run; one that does not labels no run with a paper row."""
    exp = load_spec(name)
    assert exp.runs
    for run in exp.runs:
        if not exp.paper_metric:
            assert run.paper is None, run
        else:
            row = paper_result(*run.paper)
            assert row is not None, run
            assert exp.paper_metric in row.metrics or row.label == "R50" and row.table == "10"
        cfg = run_config(run, Path("/nonexistent"))  # the recipe with the run's overrides applied
        if cfg["task"] == "detection":
            from botnet.detection.builders import parse_detector_name

            parse_detector_name(cfg["model"]["name"])
        else:
            assert is_model(cfg["model"]["name"])


def test_shipped_specs_are_not_listed_as_recipes():
    assert not set(SHIPPED) & set(recipe_names())
    assert {"table4", "table5", "table8", "tables10_12", "tables13_14", "cpu_table4", "cpu_table5", "cpu_det_demo"} <= set(SHIPPED)


def test_paper_results_share_the_baselines_across_tables():
    # R50 and BoT50 are the same trainings in Tables 4, 5 and 8 (the paper prints the same numbers)
    for label4, label5, label8 in (("R50", "R50 [0,0,0]", "R50"), ("BoT50 qk^T + qr^T relative", "BoT50 [1,1,1]", "BoT50")):
        rows = [paper_result("4", label4), paper_result("5", label5), paper_result("8", label8)]
        assert len({tuple(r.metrics.items()) for r in rows}) == 1
    assert paper_result("4", "R50").metrics == {"AP^bb": 42.1, "AP^mk": 37.7}
    assert paper_result("14", "T7").metrics == {"top-1": 84.7, "top-5": 97.0} and paper_result("14", "T7").step_ms == 804.5
    assert [r.step_ms for r in paper_results("5")] == [786.5, 813.7, 843.87, 983.2, 1032.7, 928.7, 1174.9]
    assert len(paper_results("14")) == 26 and len({(r.table, r.label) for r in PAPER_RESULTS}) == len(PAPER_RESULTS)
