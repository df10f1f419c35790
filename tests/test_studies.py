"""The papers' ablation studies: each variant is its base recipe with one change, builds the
network that change asks for, and every study script runs end to end with --smoke."""
import dataclasses
import json

import keras
import pytest

from conftest import run_script
from tiny_keras import reproduce, studies
from tiny_keras.engine.model import build_network
from tiny_keras.recipes import paper2, paper5_studies

WIDE, NARROW = (64, 128, 256, 512), (16, 32, 64, 128)


def paper2_base():
    return paper2.RECIPES["resnet18"]


def convs(network):
    return [layer for layer in network.network.layers if isinstance(layer, keras.layers.Conv2D)]


def weight_layers(network):
    """Convs on the main path plus the classifier: the papers' "layers" (projection shortcuts not counted)."""
    main = [c for c in convs(network) if not c.name.endswith("_0_conv")]  # blocks.apply_basic_block's shortcut
    return len(main) + sum(isinstance(layer, keras.layers.Dense) for layer in network.network.layers)


# -- the sweeps as data ------------------------------------------------------------------------
def test_paper2_weight_decay_variants_and_the_papers_figures():
    base = paper2_base()
    runs = studies.paper2_study("weight_decay", base)
    assert list(runs) == ["wd_1e-4", "wd_2e-4", "wd_3e-4"]
    for (name, recipe), wd in zip(runs.items(), (1e-4, 2e-4, 3e-4)):
        assert studies.changes(recipe, base) == {"model_options": {"weight_decay": wd}}, name
    # 100 - the paper's val top-1 error (figure 13: 43.7 / 42.1 / 43.2), beside the one stage.
    assert [r.paper_results for r in runs.values()] == [{"train": 56.3}, {"train": 57.9}, {"train": 56.8}]
    network = build_network(runs["wd_3e-4"])
    for layer in convs(network) + [network.get_layer("classifier")]:
        assert layer.kernel_regularizer.l2 == pytest.approx(1.5e-4)  # L2(lambda / 2), see tiny_keras.recipe


def test_paper2_init_variants_build_their_initialisers():
    base = paper2_base()
    runs = studies.paper2_study("init", base)
    assert list(runs) == ["init_xavier", "init_variance_scaling"]
    assert studies.changes(runs["init_xavier"], base) == {"model_options": {"kernel_initializer": "xavier"}}
    xavier = convs(build_network(runs["init_xavier"]))[0].kernel_initializer
    scaling = convs(build_network(runs["init_variance_scaling"]))[0].kernel_initializer
    assert isinstance(xavier, keras.initializers.GlorotUniform)
    assert isinstance(scaling, keras.initializers.VarianceScaling)
    assert scaling.scale == 2.0 and scaling.mode == "fan_in"  # N(0, 2 / n), He et al.
    assert all(not r.paper_results for r in runs.values())  # no numbers survive in the text


def test_paper2_depth_and_width_variants():
    base = paper2_base()
    depth = studies.paper2_study("depth", base)
    assert studies.changes(depth["depth_10"], base) == {"model": "paper2_resnet10", "model_options": {"filters": WIDE}}
    assert [weight_layers(build_network(r)) for r in depth.values()] == [10, 18]
    width = studies.paper2_study("width", base)
    assert list(width) == ["width_narrow", "width_wide"]
    narrow = build_network(width["width_narrow"])
    assert weight_layers(narrow) == 18
    assert [convs(narrow)[i].filters for i in (0, -1)] == [16, 128]
    assert convs(build_network(width["width_wide"]))[-1].filters == 512
    with pytest.raises(ValueError, match="paper2 studies are"):
        studies.paper2_study("dropout", base)
    with pytest.raises(ValueError, match="vary paper2's ResNet"):
        studies.paper2_study("depth", paper2.RECIPES["vgg16"])


def test_every_variant_changes_only_the_model():
    """Data, augmentation, optimizer, schedule, epochs and seed are the base's in every run."""
    bases = [(paper2_base(), studies.paper2_study(s, paper2_base())) for s in studies.PAPER2_STUDIES]
    for base, runs in bases:
        for name, recipe in runs.items():
            assert set(studies.changes(recipe, base)) <= {"model", "model_options"}, name
            assert recipe.stages == base.stages and recipe.seed == base.seed
    # paper5's lambda is the last stage's weight decay (after 40k iterations at 1e-3): only that changes.
    base = paper5_studies.base_recipe()
    for name, recipe in paper5_studies.recipes().items():
        assert set(studies.changes(recipe, base)) <= {"model_options", "stages"}, name
        assert recipe.stages[0] == base.stages[0] and recipe.seed == base.seed
        assert dataclasses.replace(recipe.stages[1], weight_decay=base.stages[1].weight_decay) == base.stages[1]


def test_paper5_l2_dropout_sweep():
    runs = paper5_studies.recipes()
    assert list(runs) == ["wd_1e-4_dropout_0.5", "wd_3e-4_dropout_0.5", "wd_5e-4_dropout_0.5",
                          "wd_1e-4_no_dropout", "wd_3e-4_no_dropout", "wd_5e-4_no_dropout"]
    expected_top1 = [36.4, 40.5, 42.0, None, None, None]  # 100 - 63.6 / 59.5 / 58.0; no-dropout lambda unknown
    for (name, recipe), top1 in zip(runs.items(), expected_top1):
        wd = float(name.split("_")[1])
        dropout = 0.0 if "no_dropout" in name else 0.5
        assert recipe.model == "paper5_cnn8"
        assert recipe.model_options == {"pool_strides": 2, "weight_decay": wd, "dropout": dropout}
        assert recipe.paper_results == ({"train": top1} if top1 else {})
        # 40,000 iterations at lambda 1e-3, then 30,000 at the run's lambda (paper5 sections 5.3 and 7).
        assert [(s.name, s.weight_decay, s.epochs * s.steps_per_epoch) for s in recipe.stages] == [
            ("lambda_1e-3", 1e-3, 40_000), ("train", wd, 30_000)]
        assert all(s.snapshot_every_epochs is None for s in recipe.stages)
    scratch = paper5_studies.recipes(history="scratch")["wd_3e-4_dropout_0.5"]
    assert [(s.name, s.weight_decay, s.epochs, s.steps_per_epoch) for s in scratch.stages] == [
        ("train", 3e-4, 30, None)]
    network = build_network(runs["wd_1e-4_no_dropout"])
    assert not [layer for layer in network.network.layers if isinstance(layer, keras.layers.Dropout)]
    network = build_network(runs["wd_1e-4_dropout_0.5"])
    assert [layer.rate for layer in network.network.layers if isinstance(layer, keras.layers.Dropout)] == [0.5, 0.5]
    assert network.get_layer("fc1_dense").kernel_regularizer.l2 == pytest.approx(5e-5)
    assert paper5_studies.recipes(pool_strides=1)["wd_1e-4_no_dropout"].model_options["pool_strides"] == 1


def test_paper2_script_needs_a_study_and_takes_only_its_runs(capsys):
    with pytest.raises(SystemExit) as exit_:
        reproduce.run_paper("paper2_studies", ["--smoke"])
    assert exit_.value.code == 2 and "--study" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        reproduce.run_paper("paper2_studies", ["--study", "width", "--model", "wd_1e-4"])
    assert exit_.value.code == 2 and "invalid choice: 'wd_1e-4'" in capsys.readouterr().err


# -- end to end ----------------------------------------------------------------------------------
# script, flags, the runs expected, the paper's top-1 beside them. paper2's width, init and
# depth studies run whole (2 runs each); its weight decay study runs 2 of its 3 variants
# and paper5's sweep 2 of its 6 (the others differ only in numbers, checked above without
# training) to keep the suite inside its time on 2 CPU cores.
SMOKE = {
    "paper2_width": ("paper2_studies.py", ["--study", "width"], {"width_narrow": None, "width_wide": None}),
    "paper2_init": ("paper2_studies.py", ["--study", "init"], {"init_xavier": None, "init_variance_scaling": None}),
    "paper2_depth": ("paper2_studies.py", ["--study", "depth"], {"depth_10": None, "depth_18": None}),
    "paper2_weight_decay": ("paper2_studies.py", ["--study", "weight_decay", "--model", "wd_1e-4", "--model",
                                                  "wd_3e-4"], {"wd_1e-4": 56.3, "wd_3e-4": 56.8}),
    "paper5_l2_dropout": ("paper5_studies.py", ["--model", "wd_5e-4_dropout_0.5", "--model", "wd_5e-4_no_dropout"],
                          {"wd_5e-4_dropout_0.5": 42.0, "wd_5e-4_no_dropout": None}),
}


@pytest.mark.slow
@pytest.mark.parametrize("study", list(SMOKE))
def test_study_smoke_run_prints_one_table(study, fixture_zip, tmp_path):
    script, flags, expected = SMOKE[study]
    workdir = tmp_path / study
    out = run_script(script, "--data", fixture_zip, "--workdir", workdir, "--smoke", *flags)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["paper"] == study and results["smoke"] is True
    stages = ["lambda_1e-3", "train"] if study.startswith("paper5") else ["train"]
    assert [(r["model"], r["stage"]) for r in results["runs"]] == [(n, s) for n in expected for s in stages]
    assert {r["model"]: r["paper_val_top1"] for r in results["runs"]} == expected
    assert list(results["recipe"]) == list(expected)
    for row in results["runs"]:
        assert 0.0 <= row["val_top1"] <= row["val_top5"] <= 100.0
        assert (workdir / row["model"] / "model.keras").is_file()
    # One table, every run in it, the paper's figure beside ours.
    table = (workdir / "results.txt").read_text()
    assert out.stdout.count("the paper's figure beside ours") == 1 and table.splitlines()[0] in out.stdout
    for name, top1 in expected.items():
        assert any(line.startswith(name) and (top1 is None or f"{top1:.2f}" in line) for line in table.splitlines())
