"""The lm-evaluation-harness hook, offline: a local multiple-choice task on the tiny checkpoint."""

import json

import pytest
import torch

DOCS = [("The return statement leaves", [" the function", " a module", " nothing"]),
        ("A list comprehension builds", [" a list", " a tuple", " an error"]),
        ("The with statement calls", [" enter", " exit", " import"]),
        ("Keyword arguments are passed", [" by name", " by position", " twice"]),
        ("An exception is raised", [" with raise", " with yield", " silently"]),
        ("Class attributes are shared", [" by instances", " by modules", " nowhere"])]


@pytest.fixture
def local_task(tmp_path):
    """A multiple-choice task whose data is a local JSONL file (label 0 everywhere)."""
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "label": 0}) + "\n" for q, c in DOCS))
    (tmp_path / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n")
    return tmp_path


def expected_accuracy(model, tokenizer) -> tuple[float, float]:
    """The harness's definition, computed by hand: the choice with the largest summed log-likelihood of its
    tokens after the context's (continuation tokens = encode(context + choice) past encode(context)).
    Also returns the smallest gap between the best and the second-best choice of a question."""
    right, gap = 0, float("inf")
    for question, choices in DOCS:
        context = tokenizer(question, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in choices:
            whole = tokenizer(question + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
            scores.append(sum(float(logp[t - 1, whole[t]]) for t in range(len(context), len(whole))))
        right += max(range(len(choices)), key=scores.__getitem__) == 0
        best, second = sorted(scores)[-2:][::-1]
        gap = min(gap, best - second)
    return right / len(DOCS), gap


def test_run_tasks_scores_the_model_it_is_given(tiny_checkpoint, local_task):
    pytest.importorskip("lm_eval", reason="lm_eval is a [dev] dependency")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from attnlab.nbl import apply
    from attnlab.nbl.lmeval import run_tasks, task_manager

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    manager = task_manager(["tiny_mc"], local_task)
    accuracies = []
    for dropped in ([], [0, 1, 2, 3]):
        if dropped:
            apply(model, method="drop", layers=dropped)
        result = run_tasks(model, tokenizer, ["tiny_mc"], manager, batch_size=2)
        accuracy, gap = expected_accuracy(model, tokenizer)
        # the harness batches and pads (another float32 path): only a clear winner makes the argmax exact
        assert gap > 1e-3, "the fixture has a near-tie between choices; change DOCS"
        assert result["tiny_mc"]["acc,none"] == pytest.approx(accuracy)
        accuracies.append(result["tiny_mc"]["acc,none"])
    assert 0 <= min(accuracies) and max(accuracies) <= 1


def test_lm_eval_bad_input_is_one_line(tiny_checkpoint, local_task, run_cli, tmp_path):
    pytest.importorskip("lm_eval", reason="lm_eval is a [dev] dependency")
    base = ("nbl", "eval", tiny_checkpoint, "--against", tiny_checkpoint, "--tokens", "64", "--seq-len", "16",
            "--greedy-tokens", "0")
    rc, _, err = run_cli(*base, "--lm-eval", "no_such_task_xyz", "--lm-eval-include", local_task)
    assert rc == 2 and "unknown lm-eval task(s): no_such_task_xyz" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli(*base, "--lm-eval", "tiny_mc", "--lm-eval-include", tmp_path / "missing")
    assert rc == 2 and "not a directory" in err
    rc, out, err = run_cli(*base, "--lm-eval", "tiny_mc", "--lm-eval-include", local_task, "--lm-eval-limit", "3",
                           "--json")
    assert rc == 0, err
    scores = json.loads(out)["lm_eval"]
    assert scores["model"] == scores["reference"]  # the same checkpoint on both sides
    assert scores["model"]["tiny_mc"]["acc,none"] in (0, 1 / 3, 2 / 3, 1)


def test_missing_harness_is_a_one_line_error(monkeypatch):
    import sys

    from attnlab.core.errors import AttnlabError
    from attnlab.nbl.lmeval import task_manager

    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)  # import fails as if not installed
    with pytest.raises(AttnlabError, match="pip install lm_eval"):
        task_manager(["hellaswag"])
