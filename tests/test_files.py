"""``tiny_keras.files``: reading back what the package wrote, and checking an output path
before the work that makes it."""
import re

import pytest

from tiny_keras import files


def test_read_json_names_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"epochs_done": ')
    with pytest.raises(files.CorruptFile, match=rf"^{re.escape(str(path))}: not valid JSON \(Expecting value: line 1 column 17 \(char 16\)\)$"):
        files.read_json(path)
    assert files.read_json(tmp_path / "missing.json", None) is None
    files.write_json({"a": [1, 2]}, path)
    assert files.read_json(path) == {"a": [1, 2]}


def test_output_problem_says_what_is_wrong_before_anything_is_written(tmp_path):
    a_file = tmp_path / "a.txt"
    a_file.write_text("kept")
    assert files.output_problem(a_file) == f"{a_file} exists; pass --overwrite to replace it"
    assert files.output_problem(a_file, overwrite=True) is None
    assert files.output_problem(tmp_path) == files.output_problem(tmp_path, overwrite=True) == (
        f"{tmp_path} is a folder; name a file")
    assert files.output_problem(tmp_path, folder=True) == f"{tmp_path} exists; pass --overwrite to replace it"
    assert files.output_problem(tmp_path, overwrite=True, folder=True) is None
    assert files.output_problem(a_file, overwrite=True, folder=True) == f"{a_file} is a file"
    assert files.output_problem(a_file / "sub" / "out.json") == (
        f"{a_file} is a file, not a folder: the output cannot be written under it")
    assert files.output_problem(tmp_path / "new" / "deeper" / "out.json") is None
    assert a_file.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
