"""The package works installed from its wheel, without the checkout on the path: the tools
and the reproduction scripts of a checkout run against an installed ``tiny_keras``, which
reads no file outside itself (its recipes are part of it)."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

# What building the wheel needs: the package and its metadata (setup.cfg reads README.md).
SOURCES = ("tiny_keras", "setup.cfg", "pyproject.toml", "README.md")


def _run(args, cwd, env=None, timeout=300):
    done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(site, env)``: the wheel built from a copy of the sources (the checkout stays clean of
    build/ and egg-info), installed into ``site`` alone; ``env`` imports it from there only."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    offline = ["--no-deps", "--no-index", "--disable-pip-version-check", "--quiet"]
    _run(["-m", "pip", "wheel", *offline, "--no-build-isolation", "-w", base / "dist", source], cwd=base)
    (wheel,) = (base / "dist").glob("tiny_keras-*.whl")
    _run(["-m", "pip", "install", *offline, "--target", base / "site", wheel], cwd=base)
    env = dict(os.environ, PYTHONPATH=str(base / "site"))
    return base / "site", wheel, env


@pytest.mark.slow
def test_the_installed_package_runs_the_tools_and_scripts_of_a_checkout(installed, fixture_zip, tmp_path):
    site, wheel, env = installed
    outside = tmp_path / "elsewhere"  # the working folder: neither the checkout nor the install
    outside.mkdir()
    names = set(zipfile.ZipFile(wheel).namelist())
    paper_modules = {f"tiny_keras/recipes/{m}.py" for m in ("__init__", "paper1", "paper2", "paper3", "paper4",
                                                             "paper5", "paper2_studies", "paper5_studies")}
    assert paper_modules | {"tiny_keras/data/classes.tsv"} <= names, sorted(paper_modules - names)
    assert not any(n.startswith(("reproductions/", "tools/", "tests/")) for n in names)

    found = _run(["-c", "import tiny_keras, tiny_keras.recipes as r; print(tiny_keras.__file__); "
                        "print(r.get('paper5').__file__)"], cwd=outside, env=env).stdout.split()
    assert found == [str(site / "tiny_keras" / "__init__.py"), str(site / "tiny_keras" / "recipes" / "paper5.py")]

    # The papers table: every paper's rows, from the installed recipes, beside the checkout's results/.
    from tiny_keras import recipes

    table = _run([REPO / "tools" / "results.py", "table"], cwd=outside, env=env).stdout
    for paper, entry in recipes.PAPERS.items():
        assert f"| {paper}: {entry.subject} |" in table
        for name, recipe in recipes.get(paper).RECIPES.items():
            for stage, figure in recipe.paper_results.items():
                assert f"| {figure:.2f} |" in table, (paper, name, stage)
    assert "| ensemble of 3 | 43.10 |" in table
    published = sorted(f"results/{p.parent.name}/{p.name}" for p in (REPO / "results").glob("paper[0-9]/*")
                       if (p / "results.json").is_file())
    assert published and all(f"]({link})" in table for link in published), published

    # A reproduction script of the checkout, run from elsewhere, trains with the installed package.
    workdir = tmp_path / "run"
    _run([REPO / "reproductions" / "paper5_caffe_cnn.py", "--smoke", "--model", "shallow", "--data", fixture_zip,
          "--workdir", workdir, "--verbose", "0"], cwd=outside, env=env)
    results = json.loads((workdir / "results.json").read_text())
    assert results["paper"] == "paper5" and results["smoke"] is True and list(results["recipe"]) == ["shallow"]
    assert [(r["model"], r["stage"], r["paper_val_top1"]) for r in results["runs"]] == [("shallow", "train", 17.5)]
    assert 0.0 <= results["runs"][0]["val_top1"] <= results["runs"][0]["val_top5"] <= 100.0
    # The run's provenance names no commit: the code that ran is the installed wheel, not a checkout.
    session = json.loads((workdir / "shallow" / "run.json").read_text())["sessions"][0]
    assert session["environment"]["source"] == {}
