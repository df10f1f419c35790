"""Published results (``results/``) and the papers table the README shows."""
import json
import os
import re
import sys

import pytest

from conftest import REPO
from tiny_keras import published, train
from tiny_keras.recipe import Recipe, Stage

sys.path.insert(0, str(REPO / "tools"))
import results as results_tool  # noqa: E402


def test_readme_tables_match_results_folder():
    """Every table made from ``results/`` (README.md's papers table, docs/results.md's with
    its notes, docs/localization.md's) is what ``tools/results.py readme`` makes of it."""
    blocks = results_tool.generated_blocks()
    assert results_tool.PAGES == {"papers-table": "README.md", "papers-table-full": "docs/results.md",
                                  "localization-table": "docs/localization.md"}
    assert set(blocks) == set(results_tool.PAGES)
    for block, generated in blocks.items():
        page = (REPO / results_tool.PAGES[block]).read_text(encoding="utf-8")
        assert results_tool.page_block(page, block) == generated, "run: python tools/results.py readme"
    assert results_tool.main(["readme", "--check"]) == 0
    # README.md's table is docs/results.md's without the notes, and links from the top folder.
    full, notes = blocks["papers-table-full"].split("\n\n", 1)
    assert re.sub(r" \(\d+\) \|", " |", full).replace("](../results/", "](results/") == blocks["papers-table"]
    # The notes are numbered in the table's order, each named by its row: note k belongs to
    # the row whose "ours" cell ends in (k).
    rows, paper = {}, None
    for line in full.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        paper = cells[0].split(":")[0] if cells[0] else paper
        marker = re.search(r"\]\(\.\./results/[^)]+\) \((\d+)\)$", cells[3])
        if marker:
            rows[int(marker.group(1))] = f"{paper} {cells[1]}"
    labels = re.findall(r"^(\d+)\. ([^:]+): ", notes, flags=re.M)
    assert [int(k) for k, _ in labels] == list(range(1, len(rows) + 1)) == sorted(rows)
    assert {int(k): label for k, label in labels} == rows
    assert {"paper3 vgg_y", "paper4 model1", "paper4 model2, bfloat16", "paper5 cnn8 (fine_tune)"} <= set(rows.values())
    assert "[record](../results/paper2_localization/goldfish)" in blocks["localization-table"]


def test_readme_check_fails_where_a_table_differs(monkeypatch, tmp_path, capsys):
    """``readme --check`` exits 1 naming the stale table; ``readme`` rewrites only that block."""
    for page in set(results_tool.PAGES.values()):
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text((REPO / page).read_text(encoding="utf-8"), encoding="utf-8")
    results = tmp_path / "docs" / "results.md"
    text = results.read_text(encoding="utf-8")
    results.write_text(text.replace("| model2 | 22.72 |", "| model2 | 99.99 |"), encoding="utf-8")
    monkeypatch.setattr(results_tool, "REPO", str(tmp_path))
    assert results_tool.main(["readme", "--check"]) == 1
    assert "docs/results.md (papers-table-full) differ from results/" in capsys.readouterr().err
    assert results_tool.main(["readme"]) == 0
    assert results.read_text(encoding="utf-8") == text
    assert results_tool.main(["readme", "--check"]) == 0


def test_catalogue_lists_every_figure_the_papers_report():
    rows = results_tool.catalogue(with_costs=False)
    figures = {(r.paper, r.run, r.stage): r.paper_top1 for r in rows}
    assert figures[("paper1", "resnet", "clr")] == 62.57 and figures[("paper1", "resnet", "32px")] == 43.91
    assert figures[("paper2", "inception_resnet", "train")] == 62.44
    assert figures[("paper4", "model2", "train")] == 22.72 and figures[("paper4", "model5", "train")] == 43.14
    assert figures[("paper5", "cnn8", "fine_tune")] == 42.0 and figures[("paper5", "ensemble of 3", "ensemble")] == 43.1
    assert figures[("paper5", "shallow", "train")] == 17.5
    assert [r.run for r in rows if r.paper == "paper3"] == ["vgg_z", "vgg_f", "vgg_y"]  # no figures survive
    assert len(rows) == 6 + 4 + 3 + 5 + 6
    # Paper 4's model 5 starts from ImageNet weights that Keras downloads; no other row needs a download.
    assert [(r.run, r.downloads) for r in rows if r.downloads] == [("model5", "its ImageNet weights from Keras's "
                                                                             "servers")]
    table = published.papers_table([r for r in rows if r.run == "model5"], REPO / "results")
    assert table[0]["status"] == ("not yet run: needs its ImageNet weights from Keras's servers, which the machines "
                                  "this project trained on could not reach")


def test_training_cost_counts_images_and_flops():
    from tiny_keras import recipes

    paper4 = recipes.get("paper4")
    images, flops = results_tool.training_cost(paper4.RECIPES["model2"])
    assert images == 15 * (100_000 // 32) * 32  # 15 epochs of 3,125 batches of 32
    from tiny_keras import models

    forward = models.forward_flops(models.build("paper4_model2"))
    assert flops == pytest.approx(3 * forward * images)
    row = published.Row("paper4", "model2", "train", 22.72, training_images=images, training_flops=flops)
    expected = max(flops / published.GPU_FLOPS_PER_SECOND, images / published.GPU_MAX_IMAGES_PER_SECOND) / 3600
    assert published.estimate_gpu_hours(row) == pytest.approx(expected)


def test_first_epoch_reaching_the_papers_figure():
    history = [{"epoch": "0", "val_top1": "0.101"}, {"epoch": "1", "val_top1": "0.2272"},
               {"epoch": "2", "val_top1": "0.25"}]
    assert published.first_epoch_reaching(history, 22.72) == 2  # epochs are 1-based
    assert published.first_epoch_reaching(history, 10.0) == 1
    assert published.first_epoch_reaching(history, 30.0) is None


def _finished_run(fixture_zip, folder, **recipe_changes):
    recipe = Recipe(paper="paper4", model="paper4_model2", preprocessing={"rescale": 1 / 255},
                    paper_results={"train": 1.0},
                    stages=[Stage(epochs=2, batch_size=4, optimizer={"name": "adam", "learning_rate": 1e-3})],
                    **recipe_changes)
    return train.train(recipe, folder, data=fixture_zip, verbose=0, tensorboard=False, activation_samples=0)


def test_publish_copies_the_record_and_the_table_shows_it(fixture_zip, tmp_path):
    run = tmp_path / "runs" / "model2"
    result = _finished_run(fixture_zip, run)
    target = published.publish(run, tmp_path / "results", note="Fixture data: not a real result.")
    assert target == str(tmp_path / "results" / "paper4" / "model2")
    copied = sorted(os.path.relpath(os.path.join(d, f), target) for d, _, fs in os.walk(target) for f in fs)
    assert copied == ["note.md", "recipe.json", "results.json", "run.json", os.path.join("stages", "train",
                                                                                          "history.csv")]
    assert not [f for f in copied if f.endswith(".keras")]  # never weights
    # Not again without overwrite; with it, replaced.
    with pytest.raises(published.PublishError, match="exists; pass overwrite=True"):
        published.publish(run, tmp_path / "results")
    published.publish(run, tmp_path / "results", overwrite=True)
    assert not (tmp_path / "results" / "paper4" / "model2" / "note.md").exists()
    published.publish(run, tmp_path / "results", overwrite=True, note="Fixture data: not a real result.")

    measured = result["runs"][0]["val_top1"]
    rows = [published.Row("paper4", "model2", "train", 1.0), published.Row("paper4", "model1", "train", 14.19,
                                                                             training_images=10, training_flops=0.0)]
    table = published.papers_table(rows, tmp_path / "results")
    assert table[0]["status"] == "measured" and table[0]["ours_top1"] == round(measured, 2)
    assert table[0]["difference"] == round(measured - 1.0, 2) and table[0]["epochs"] == 2
    history = published.read_history(target, "train")
    assert table[0]["first_epoch_at_paper_figure"] == published.first_epoch_reaching(history, 1.0)
    assert table[0]["machine"].endswith("(tensorflow)") and table[0]["command"].startswith("python")
    source = json.loads((run / "run.json").read_text())["sessions"][0]["environment"]["source"]
    assert table[0]["sessions"] == 1
    assert table[0]["commits"] == [source.get("commit", "unknown") + ("+dirty" if source.get("dirty") else "")]
    assert table[1]["status"] == "not yet run (0.0M training images; est. 0 min on one H100-class GPU)"
    markdown = published.markdown(table)
    assert f"[{measured:.2f}](results/paper4/model2) (1) |" in markdown and "| model1 | 14.19 | not yet run" in markdown
    assert markdown.endswith("\n\n1. paper4 model2: Fixture data: not a real result.")
    # Without the notes (README.md's), and linked from docs/.
    alone = published.markdown(table, notes=False, link_prefix="../")
    assert alone == markdown.split("\n\n")[0].replace(" (1) |", " |").replace("](results/", "](../results/")


def test_a_variant_run_is_its_rows_second_line_with_its_precision(fixture_zip, tmp_path):
    """results/paper4/model2-bfloat16 is a second published run of the row paper4 / model2,
    shown beside the run itself with the precision each trained in."""
    _finished_run(fixture_zip, tmp_path / "runs" / "model2")
    bf16 = _finished_run(fixture_zip, tmp_path / "runs" / "bf16", precision="mixed_bfloat16")
    published.publish(tmp_path / "runs" / "model2", tmp_path / "results")
    published.publish(tmp_path / "runs" / "bf16", tmp_path / "results", run="model2-bfloat16")
    rows = [published.Row("paper4", "model2", "train", 1.0), published.Row("paper4", "model1", "train", 14.19)]
    table = published.papers_table(rows, tmp_path / "results")
    assert [(e["run"], e["variant"], e["precision"]) for e in table] == [
        ("model2", None, "float32"), ("model2", "bfloat16", "mixed_bfloat16"), ("model1", None, None)]
    assert table[1]["ours_top1"] == round(bf16["runs"][0]["val_top1"], 2)
    lines = published.markdown(table).splitlines()
    assert lines[3].startswith("|  | model2, bfloat16 | 1.00 | [") and "(results/paper4/model2-bfloat16)" in lines[3]
    assert "| mixed_bfloat16 |" in lines[3] and "| float32 |" in lines[2]
    assert lines[4] == "|  | model1 | 14.19 | not yet run | | | | | | |"
    # Records written before ``precision`` existed.
    assert published.precision_of({"mixed_precision": False}) == "float32"
    assert published.precision_of({"mixed_precision": True}) == "mixed_float16"


def test_a_run_continued_on_another_machine_names_both_and_its_commits():
    def session(cpu, commit, dirty=False):
        return {"command": "python reproductions/paper4_cnn_transfer.py --model model4 --time-limit 2h",
                "environment": {"backend": "tensorflow", "source": {"commit": commit, "dirty": dirty},
                                "machine": {"cpu": cpu, "cores": 2, "accelerators": []}}}

    one = {"sessions": [session("AMD EPYC", "a" * 40)]}
    assert published.machine_of(one) == "AMD EPYC, 2 cores (tensorflow)"
    assert published.commits_of(one) == ["a" * 40]
    split = {"sessions": [session("AMD EPYC", "a" * 40), session("AMD EPYC", "a" * 40),
                          session("Intel(R) Xeon(R) CPU @ 2.20GHz", "b" * 40, dirty=True)]}
    assert published.machine_of(split) == "AMD EPYC, 2 cores; Intel(R) Xeon(R) CPU @ 2.20GHz, 2 cores (tensorflow)"
    assert published.commits_of(split) == ["a" * 40, "b" * 40 + "+dirty"]
    assert published.commits_of(split, short=True) == ["aaaaaaa", "bbbbbbb+dirty"]
    split["sessions"][0]["environment"]["machine"]["accelerators"] = ["NVIDIA H100 80GB HBM3"]
    split["sessions"][0]["environment"]["backend"] = "jax"
    assert published.machine_of(split) == ("NVIDIA H100 80GB HBM3 (jax); AMD EPYC, 2 cores (tensorflow); "
                                           "Intel(R) Xeon(R) CPU @ 2.20GHz, 2 cores (tensorflow)")


def test_publish_refuses_unfinished_and_smoke_runs(fixture_zip, tmp_path):
    with pytest.raises(published.PublishError, match="not a finished run"):
        published.publish(tmp_path, tmp_path / "results")
    run = tmp_path / "subset"
    _finished_run(fixture_zip, run, per_class=2)
    with pytest.raises(published.PublishError, match="smoke or subset run"):
        published.publish(run, tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_results_tool_table_prints_markdown_and_json(tmp_path, capsys):
    out = tmp_path / "table.json"
    (tmp_path / "none").mkdir()  # a results folder with nothing published
    assert results_tool.main(["table", "--json", str(out), "--results", str(tmp_path / "none")]) == 0
    rows = json.loads(out.read_text())
    assert {r["status"].split(" (")[0].split(":")[0] for r in rows} == {"not yet run"}
    assert capsys.readouterr().out.startswith("| paper | model | paper's val top-1 | ours |")


def _error_line(capsys):
    """What argparse said after "error: " (its last line, after the usage)."""
    return capsys.readouterr().err.splitlines()[-1].split("error: ", 1)[1]


def _no_work():
    raise AssertionError("the table was made before its arguments were checked")


def _record(folder, **recipe):
    """A finished run's record, as publish reads it."""
    folder.mkdir(parents=True)
    (folder / "recipe.json").write_text(json.dumps({"paper": "paper4", "stages": [{"name": "train"}], **recipe}))
    (folder / "results.json").write_text(json.dumps({"runs": []}))
    (folder / "run.json").write_text(json.dumps({"sessions": []}))


def test_results_tool_table_checks_json_and_results_before_any_work(monkeypatch, tmp_path, capsys):
    """``table --json OUT`` refuses an existing OUT unless ``--overwrite``, a folder, and a path
    under a file; ``--results`` must be a folder. Each in one line naming the flag, exit 2."""
    monkeypatch.setattr(results_tool, "catalogue", _no_work)
    existing, folder, afile = tmp_path / "exists.json", tmp_path / "folder", tmp_path / "afile.txt"
    existing.write_text("{}")
    folder.mkdir()
    afile.write_text("text")
    for argv, line in [
        (["--json", str(existing)], f"--json: {existing} exists; pass --overwrite to replace it"),
        (["--json", str(folder), "--overwrite"], f"--json: {folder} is a folder; name a file"),
        (["--json", str(afile / "out.json")],
         f"--json: {afile} is a file, not a folder: the output cannot be written under it"),
        (["--results", str(tmp_path / "none")],
         f"--results: {tmp_path / 'none'}: no such folder; expected a published results folder"),
        (["--results", str(afile)], f"--results: {afile} is a file; expected a published results folder"),
    ]:
        with pytest.raises(SystemExit) as exit:
            results_tool.main(["table", *argv])
        assert exit.value.code == 2
        assert _error_line(capsys) == line
    assert existing.read_text() == "{}" and os.listdir(folder) == []
    monkeypatch.setattr(results_tool, "catalogue", lambda: [published.Row("paper4", "model2", "train", 22.72)])
    assert results_tool.main(["table", "--json", str(existing), "--overwrite", "--results", str(folder)]) == 0
    assert [(r["run"], r["status"]) for r in json.loads(existing.read_text())] == [("model2", "not yet run")]


def test_results_tool_names_a_corrupt_published_file(monkeypatch, tmp_path, capsys):
    """A truncated JSON file in a published run stops ``table`` and ``readme`` with one line
    naming it (exit 1); so does a missing results folder for ``readme``."""
    monkeypatch.setattr(results_tool, "catalogue", lambda: [published.Row("paper4", "model2", "train", 22.72)])
    monkeypatch.setattr(results_tool, "RESULTS", str(tmp_path / "results"))
    _record(tmp_path / "results" / "paper4" / "model2")
    for name in ("recipe.json", "results.json"):
        path = tmp_path / "results" / "paper4" / "model2" / name
        path.write_text('{"runs": [')
        line = f"error: {path}: not valid JSON (Expecting value: line 1 column 11 (char 10))\n"
        assert results_tool.main(["table", "--results", str(tmp_path / "results")]) == 1
        assert capsys.readouterr().err == line
        assert results_tool.main(["readme", "--check"]) == 1
        assert capsys.readouterr().err == line
    monkeypatch.setattr(results_tool, "RESULTS", str(tmp_path / "none"))
    assert results_tool.main(["readme", "--check"]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path / 'none'}: no such folder; "
                                       "expected a published results folder\n")


def test_results_tool_publish_overwrite_keeps_the_note_unless_a_new_one_is_given(tmp_path, capsys):
    run, results = tmp_path / "runs" / "model2", tmp_path / "results"
    _record(run)
    target = results / "paper4" / "model2"
    publish = ["publish", str(run), "--results", str(results)]
    assert results_tool.main([*publish, "--note", "First note."]) == 0
    assert (target / "note.md").read_text() == "First note.\n"
    capsys.readouterr()
    assert results_tool.main(publish) == 1
    assert capsys.readouterr().err == f"error: {target} exists; pass --overwrite to replace it\n"
    assert results_tool.main([*publish, "--overwrite"]) == 0
    assert (target / "note.md").read_text() == "First note.\n"
    assert capsys.readouterr().out == (f"kept {target / 'note.md'}; pass --note to replace it\n"
                                       f"published {target}; now run: python tools/results.py readme\n")
    assert results_tool.main([*publish, "--overwrite", "--note", "Second note."]) == 0
    assert (target / "note.md").read_text() == "Second note.\n"
    assert capsys.readouterr().out == f"published {target}; now run: python tools/results.py readme\n"


def test_results_tool_publish_as_takes_two_plain_names_inside_results(tmp_path, capsys):
    """``--as PAPER/RUN``: exactly one slash between two plain names, so that nothing is
    written outside ``--results``; anything else is one line naming ``--as``, exit 2."""
    run, results = tmp_path / "runs" / "model2", tmp_path / "results"
    _record(run)
    for name in ("paper5", "paper4/../../escape", "paper4/model2/x", "../model2", "paper4/..", "paper4/",
                 "/model2", "paper 4/model2"):
        with pytest.raises(SystemExit) as exit:
            results_tool.main(["publish", str(run), "--results", str(results), "--as", name])
        assert exit.value.code == 2
        assert _error_line(capsys) == (f"--as: expected PAPER/RUN, two plain names (letters, digits, _ - .; "
                                       f"not . or ..), not {name!r}")
    assert sorted(os.listdir(tmp_path)) == ["runs"]
    assert results_tool.main(["publish", str(run), "--results", str(results), "--as", "paper4/model2-bfloat16"]) == 0
    assert os.listdir(results / "paper4") == ["model2-bfloat16"]
    with pytest.raises(published.PublishError, match=r"^'\.\./escape': a published paper or run name is a plain"):
        published.publish(run, results, run="../escape")


def test_results_tool_publish_names_a_results_file_or_a_corrupt_record(tmp_path, capsys):
    run, results, afile = tmp_path / "run", tmp_path / "results", tmp_path / "afile.txt"
    _record(run)
    afile.write_text("text")
    for path, line in [(afile, f"--results: {afile} is a file; expected a folder to publish into"),
                       (afile / "sub", f"--results: {afile} is a file, not a folder: the output cannot be written "
                                       "under it")]:
        with pytest.raises(SystemExit) as exit:
            results_tool.main(["publish", str(run), "--results", str(path)])
        assert exit.value.code == 2
        assert _error_line(capsys) == line
    assert afile.read_text() == "text"
    for name in ("recipe.json", "results.json"):
        (run / name).write_text('{"runs": [')
        assert results_tool.main(["publish", str(run), "--results", str(results)]) == 1
        assert capsys.readouterr().err == (f"error: {run / name}: not valid JSON "
                                           "(Expecting value: line 1 column 11 (char 10))\n")
    assert not results.exists()
