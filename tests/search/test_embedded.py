"""An embedded search (SQLite file, two local worker processes) on digits: every output written, the
chosen pipeline exports, and a rerun resumes the same study."""

from __future__ import annotations

import csv
import json
import subprocess

import optuna
import yaml

from tests.search.conftest import env, search_cmd, write_pipeline


def test_embedded_search_writes_everything_and_best_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_pipeline(tmp_path)
    r = subprocess.run(
        search_cmd(path, "--trials", "6", "--workers", "2"),
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "search" / "digits_search"
    assert {p.name for p in out.iterdir()} >= {"trials.csv", "trials.json", "pareto.png", "pareto.html", "best.yaml"}
    summary = json.loads((out / "trials.json").read_text())
    rows = summary["trials"]
    assert len(rows) == 6 and [r["trial"] for r in rows] == list(range(6))
    assert {r["worker"] for r in rows} == {0, 1}, "both local workers ran trials"
    assert all(r["host"] and r["seconds"] is not None for r in rows)
    with open(out / "trials.csv") as fh:
        assert [int(r["trial"]) for r in csv.DictReader(fh)] == list(range(6))
    done = [r for r in rows if r["state"] == "complete"]
    assert done, [r["pruned"] or r["error"] for r in rows]
    for r in done:  # a complete trial has its objectives and a verdict, feasible or not
        assert 0 < r["accuracy"] <= 1 and r["gzip_bytes"] < r["flash_bytes"] and r["arena_bytes@cortex-m7-512k"] > 0
        assert isinstance(r["feasible"], bool)
    for r in rows:
        if r["state"] == "pruned":
            assert r["pruned"].startswith("after ")
    # The study is the SQLite file under build/, and holds the same trials.
    study = optuna.load_study(
        study_name="digits_search", storage=f"sqlite:///{tmp_path}/build/search/digits_search/study.db"
    )
    assert len(study.trials) == 6

    chosen = summary["chosen"]
    front = [r for r in rows if r["pareto"]]
    assert chosen in [r["trial"] for r in front]
    pick = next(r for r in rows if r["trial"] == chosen)
    feasible = [r for r in rows if r["feasible"]]
    assert pick["flash_bytes"] == min(r["flash_bytes"] for r in feasible), (
        "rule: the smallest flash that meets all budgets"
    )
    assert all(r["test_accuracy"] is not None for r in front), "the test split is measured for the front"
    assert all(r["test_accuracy"] is None for r in rows if not r["pareto"]), "and only for the front"
    html = (out / "pareto.html").read_text()
    assert "Pareto front" in html and "data:image/png;base64," in html
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"

    best = yaml.safe_load((out / "best.yaml").read_text())
    assert "search" not in best and best["name"] == "digits_search_best"
    params = {k.removeprefix("param."): v for k, v in pick.items() if k.startswith("param.")}
    stages = [s["stage"] for s in best["steps"]]
    assert ("qat" in stages) == params["qat"]
    assert ("cluster" in stages) == (params["cluster.clusters"] is not None)
    assert next(s for s in best["steps"] if s["stage"] == "prune")["final_sparsity"] == params["prune.final_sparsity"]

    from edgeopt.export import export
    from edgeopt.pipeline.spec import load_pipeline

    result = export(load_pipeline(out / "best.yaml"), tmp_path / "dist")
    assert (tmp_path / "dist" / "manifest.json").is_file(), result

    # A rerun adds trials to the same study (resume), it does not start a new one.
    r = subprocess.run(
        search_cmd(path, "--trials", "1"), cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(json.loads((out / "trials.json").read_text())["trials"]) == 7
