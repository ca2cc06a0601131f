import json

import pytest

from attnlab.core.errors import AttnlabError
from attnlab.core.text import builtin_topics, describe, document_hash, load_texts, split_builtin, split_documents


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
    (tmp_path / "a.txt").write_text("hello world\n\n  \nsecond paragraph\nstill second\n")
    assert load_texts(tmp_path / "a.txt", "all") == ["hello world", "second paragraph\nstill second"]
    lines = [json.dumps({"text": "one"}), "", json.dumps({"text": "two"})]
    (tmp_path / "b.jsonl").write_text("\n".join(lines))
    assert load_texts(tmp_path / "b.jsonl", "all") == ["one", "two"]
    assert describe(tmp_path / "b.jsonl", "all")["documents"] == 2


def test_every_source_splits_by_document(tmp_path):
    docs = [f"document number {i}" for i in range(200)] + ["a repeated document"] * 5
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs))
    cal, held = (load_texts(tmp_path / "c.jsonl", s) for s in ("calibration", "heldout"))
    assert not set(cal) & set(held) and sorted(cal + held) == sorted(docs)  # disjoint and complete
    assert 20 < len(held) < 70 and cal == [d for d in docs if d in set(cal)]  # about 20%, order kept
    # the split is the documents' own: shuffled or in another file, each lands on the same side
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in reversed(docs[:50])))
    assert set(load_texts(tmp_path / "d.jsonl", "heldout")) == set(held) & set(docs[:50])
    assert split_documents(docs) == {"calibration": cal, "heldout": held}
    assert document_hash("one") == document_hash("one") != document_hash("two")


def test_bad_sources(tmp_path):
    with pytest.raises(AttnlabError, match="not found"):
        load_texts(tmp_path / "missing.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": 3}\n')
    with pytest.raises(AttnlabError, match=r"bad.jsonl:2: expected an object with a string field 'text'"):
        load_texts(tmp_path / "bad.jsonl")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(AttnlabError, match="contains no text"):
        load_texts(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(AttnlabError, match="not UTF-8 text"):
        load_texts(tmp_path / "latin1.txt")
    (tmp_path / "one.txt").write_text("keep me")  # one document: it hashes into calibration, nothing is held out
    assert load_texts(tmp_path / "one.txt") == ["keep me"]
    with pytest.raises(AttnlabError, match="none of its 1 documents falls in the heldout split"):
        load_texts(tmp_path / "one.txt", "heldout")
    with pytest.raises(AttnlabError, match="unknown split"):
        load_texts("builtin", split="train")


def test_builtin_fraction_in_the_source_name():
    assert load_texts("builtin") == split_builtin(0.2)["calibration"]
    assert load_texts("builtin:0.1", "heldout") == split_builtin(0.1)["heldout"]
    with pytest.raises(AttnlabError, match="builtin:FRACTION"):
        load_texts("builtin:abc")
    with pytest.raises(AttnlabError, match=r"must be in \(0, 1\)"):
        load_texts("builtin:2")
