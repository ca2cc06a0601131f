"""Held-out integrity by construction (issue 13, item 2): seeded calibration sampling across the split, the
calibration documents recorded by hash, and `eval` refusing overlapping text or another base model."""

import json
import shutil

import pytest

from attnlab.core.errors import AttnlabError
from attnlab.core.text import document_hash, load_texts
from attnlab.nbl.data import blocks_from_source
from attnlab.nbl.evaluate import check_integrity

CAL = ["--tokens", "512", "--seq-len", "32", "--batch-size", "4"]
EVAL = ["--tokens", "128", "--seq-len", "32", "--greedy-tokens", "0", "--json"]


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoint)


def test_calibration_is_sampled_across_the_split_by_seed(tokenizer):
    split = {document_hash(d) for d in load_texts("builtin")}
    first = [document_hash(d) for d in load_texts("builtin")[:3]]  # the name-sorted start the old code took
    (b0, info0), (_, info1) = (blocks_from_source(tokenizer, "builtin", "calibration", 32, 2048, s) for s in (0, 1))
    assert b0.shape == (64, 32) and info0["tokens"] == 2048 and info0["seed"] == 0
    assert set(info0["documents_used"]) <= split and set(info1["documents_used"]) <= split
    assert info0["documents_used"] != info1["documents_used"] and info0["documents_used"][:3] != first
    again, info_again = blocks_from_source(tokenizer, "builtin", "calibration", 32, 2048, 0)
    assert info_again == info0 and bool((again == b0).all())


def test_eval_refuses_calibration_text_and_another_base(tiny_checkpoint, tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    doc = " ".join(load_texts("builtin")[0].split()[:400])  # one document, long enough to calibrate on
    assert load_texts(_jsonl(tmp_path / "one.jsonl", [doc])) == [doc]  # it hashes into the calibration split
    rc, _, err = run_cli("nbl", "apply", tiny_checkpoint, "--layers", "1", "--data", tmp_path / "one.jsonl", *CAL,
                         "-o", tmp_path / "lin")  # no held-out document to measure the map's error on: refused
    assert rc == 2 and "or pass --heldout-tokens 0" in err, err
    rc, _, err = run_cli("nbl", "apply", tiny_checkpoint, "--layers", "1", "--data", tmp_path / "one.jsonl", *CAL,
                         "--heldout-tokens", "0", "-o", tmp_path / "lin")
    assert rc == 0, err
    record = json.loads((tmp_path / "lin" / "nbl.json").read_text())
    assert record["calibration"]["documents_used"] == [document_hash(doc)] and record["base_identity"]

    rc, _, err = run_cli("nbl", "eval", tmp_path / "lin", "--against", tiny_checkpoint, "--data",
                         tmp_path / "one.jsonl", "--split", "all", *EVAL)
    assert rc == 2 and "1 of the 1 held-out documents" in err and len(err.strip().splitlines()) == 1, err

    rc, out, err = run_cli("nbl", "eval", tmp_path / "lin", "--against", tiny_checkpoint, "--dtype", "bfloat16",
                           *EVAL)  # builtin's held-out split; bfloat16 is still the same base
    assert rc == 0, err
    assert not set(json.loads(out)["heldout"]["documents_used"]) & set(record["calibration"]["documents_used"])

    other = _perturbed_copy(tiny_checkpoint, tmp_path / "other")
    rc, _, err = run_cli("nbl", "eval", tmp_path / "lin", "--against", other, *EVAL)
    assert rc == 2 and "was linearized from another base model" in err and len(err.strip().splitlines()) == 1, err


def test_records_without_the_fields_are_scored_with_one_warning(capsys):
    heldout = {"source": "builtin", "documents_used": ["ab"]}
    check_integrity({"calibration": {"tokens": 512}}, reference=None, heldout=heldout)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its base model or that the held-out text is not calibration text" in err[0]
    check_integrity(None, reference=None, heldout=heldout)  # a plain checkpoint: nothing recorded, nothing said
    assert capsys.readouterr().err == ""
    with pytest.raises(AttnlabError, match="1 of the 1 held-out documents of builtin"):
        check_integrity({"base_identity": None, "calibration": {"documents_used": ["ab"]}}, None, heldout)


def _jsonl(path, docs):
    path.write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n")
    return path


def _perturbed_copy(checkpoint, folder):
    """The checkpoint with one weight changed: the same config and tokenizer, another base model."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(checkpoint, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.model.embed_tokens.weight[0, 0] += 1.0
    model.save_pretrained(folder)
    return folder
