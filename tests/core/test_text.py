import json

import pytest

from attnlab.core.errors import AttnlabError
from attnlab.core.text import builtin_topics, describe, load_texts, split_builtin


def test_builtin_split_is_disjoint_complete_and_deterministic():
    a, b = split_builtin(0.2), split_builtin(0.2)
    assert a == b
    cal, held = a["calibration"], a["heldout"]
    assert cal and held
    assert not set(cal) & set(held)
    assert sorted(cal + held) == sorted(builtin_topics().values())
    assert sum(map(len, cal + held)) > 300_000


def test_split_fraction_moves_documents_one_way():
    small, large = split_builtin(0.1)["heldout"], split_builtin(0.5)["heldout"]
    assert set(small) <= set(large) and len(large) > len(small)
    with pytest.raises(AttnlabError):
        split_builtin(1.5)


def test_local_files(tmp_path):
    (tmp_path / "a.txt").write_text("hello world")
    assert load_texts(tmp_path / "a.txt") == ["hello world"]
    lines = [json.dumps({"text": "one"}), "", json.dumps({"text": "two"})]
    (tmp_path / "b.jsonl").write_text("\n".join(lines))
    assert load_texts(tmp_path / "b.jsonl") == ["one", "two"]
    assert describe(tmp_path / "b.jsonl")["documents"] == 2


def test_bad_sources(tmp_path):
    with pytest.raises(AttnlabError, match="not found"):
        load_texts(tmp_path / "missing.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": 3}\n')
    with pytest.raises(AttnlabError, match=r"bad.jsonl:2: expected an object with a string field 'text'"):
        load_texts(tmp_path / "bad.jsonl")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(AttnlabError, match="contains no text"):
        load_texts(tmp_path / "empty.txt")
    with pytest.raises(AttnlabError, match="unknown split"):
        load_texts("builtin", split="train")


def test_builtin_fraction_in_the_source_name():
    assert load_texts("builtin") == split_builtin(0.2)["calibration"]
    assert load_texts("builtin:0.1", "heldout") == split_builtin(0.1)["heldout"]
    with pytest.raises(AttnlabError, match="builtin:FRACTION"):
        load_texts("builtin:abc")
    with pytest.raises(AttnlabError, match=r"must be in \(0, 1\)"):
        load_texts("builtin:2")
