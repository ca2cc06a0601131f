"""The backbone as a transformers GPT-2, the kept prompt (search --save: backbone, data, PEFT adapter) and
``memorize verify``: the same whole-vocabulary criterion on every side."""

import json
from pathlib import Path

import pytest
import torch

from attnlab.cli import main
from attnlab.core.errors import AttnlabError
from attnlab.memorize.artifact import generated, score
from attnlab.memorize.backbone import Backbone, BackboneConfig
from attnlab.memorize.data import IGNORE
from attnlab.memorize.gpt2 import check_convertible, gpt2_state, to_gpt2

SMALL = dict(vocab=16, n_classes=8, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=12, train_steps=20)
#: A search that memorizes in a few dozen steps at m = 2 (labels at the last position).
TINY = ["--n-pairs", "3", "--seq-len", "2", "--vocab", "8", "--n-classes", "3", "--d-model", "16", "--n-heads", "2",
        "--n-layers", "1", "--d-ff", "16", "--max-steps", "150", "--m-max", "2", "--m-start", "2", "--restarts", "1",
        "--lr", "0.1", "--margin", "0.2", "--quiet"]
#: Whole sequences (target every): the next token at every position, regenerated from the key token.
EVERY = ["--n-pairs", "2", "--seq-len", "2", "--vocab", "8", "--n-classes", "3", "--target", "every", "--d-model",
         "32", "--n-heads", "2", "--n-layers", "1", "--d-ff", "64", "--max-steps", "60", "--m-max", "8", "--m-start",
         "8", "--restarts", "1", "--lr", "0.1", "--margin", "0.2", "--quiet"]


def hf_logits(hf, prompt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The HF model's own forward on [prompt; token embeddings], read at the input positions."""
    emb = torch.cat([prompt.expand(tokens.shape[0], -1, -1), hf.transformer.wte(tokens)], 1)
    with torch.no_grad():
        return hf(inputs_embeds=emb).logits[:, prompt.shape[0]:]


@pytest.mark.parametrize("init, draw", [("gaussian", "invariant"), ("trained", "invariant"), ("orthogonal", "legacy")])
def test_gpt2_twin_is_the_backbone(init, draw):
    """Weights map bit for bit (copies, transposes, zero biases, m zero position rows); the cached fast path (prompt
    states once, input states reused, last position only) computes the GPT-2's own forward: float64 to 1e-12 and the
    same argmax over the whole vocabulary at every position."""
    bb = Backbone(BackboneConfig(**SMALL, init=init, draw=draw)).double()
    m = 5
    hf = to_gpt2(bb, m)
    state = hf.state_dict()
    assert torch.equal(state["transformer.h.1.attn.c_attn.weight"].T, bb.blocks[1].attn.qkv.weight)
    assert torch.equal(state["transformer.h.0.mlp.c_proj.weight"].T, bb.blocks[0].mlp[2].weight)
    assert torch.equal(state["transformer.wpe.weight"][m:], bb.wpe.weight)
    assert not state["transformer.wpe.weight"][:m].any() and not state["transformer.h.0.attn.c_attn.bias"].any()
    assert torch.equal(state["lm_head.weight"], bb.readout.weight) and hf.lm_head.out_features == SMALL["vocab"]
    prompt = torch.randn(m, 16, dtype=torch.float64)
    tokens = torch.randint(0, 16, (7, 6))
    ref = hf_logits(hf, prompt, tokens)
    with torch.no_grad():
        inputs = bb.input_states(tokens)
        fast, last = bb(prompt, inputs), bb(prompt, inputs, last_only=True)
    torch.testing.assert_close(fast, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(last, ref[:, -1:], atol=1e-12, rtol=0)
    assert torch.equal(fast.argmax(-1), ref.argmax(-1))
    bb32 = Backbone(BackboneConfig(**SMALL, init=init, draw=draw))
    torch.testing.assert_close(bb32(prompt.float(), tokens), hf_logits(to_gpt2(bb32, m), prompt.float(), tokens))


def test_what_has_no_gpt2_twin_is_refused():
    for kw, gen_steps, words in ((dict(norm=False), 0, "--no-norm"), (dict(readout="classes"), 0, "--readout vocab"),
                                 ({}, 2, "--gen-steps 0")):
        with pytest.raises(AttnlabError, match=words):
            check_convertible(Backbone(BackboneConfig(**{**SMALL, **kw})), gen_steps)
    with pytest.raises(AttnlabError, match="--no-norm"):
        gpt2_state(Backbone(BackboneConfig(**SMALL, norm=False)), 3)


def test_the_readout_covers_the_vocabulary_and_keeps_the_label_rows():
    """readout vocab: logits over all 16 tokens; its first n_classes rows and every block are those of the restricted
    read-out (the committed sweeps' backbone), the other rows come from a stream of their own."""
    full, classes = Backbone(BackboneConfig(**SMALL)), Backbone(BackboneConfig(**SMALL, readout="classes"))
    assert full.readout.weight.shape == (16, 16) and classes.readout.weight.shape == (8, 16)
    assert torch.equal(full.readout.weight[:8], classes.readout.weight)
    assert torch.equal(full.blocks[1].mlp[0].weight, classes.blocks[1].mlp[0].weight)
    assert not torch.equal(full.readout.weight[8:], torch.zeros(8, 16))
    with pytest.raises(AttnlabError, match="n_classes=20 must be at most vocab=16"):
        BackboneConfig(**{**SMALL, "n_classes": 20})


def test_score_is_the_argmax_over_the_whole_vocabulary():
    """A target that wins among the labels but not over every token is not reproduced."""
    targets = torch.tensor([[IGNORE, 1], [IGNORE, 2]])
    logits = torch.zeros(2, 2, 6)
    logits[0, 1, 1], logits[1, 1, 2] = 3.0, 2.0
    assert score(logits, targets) == {"exact": True, "targets_reproduced": 2, "n_targets": 2, "examples_reproduced": 2,
                                      "n_examples": 2, "min_margin": 2.0}
    logits[1, 1, 5] = 2.5  # a token outside the 3 labels beats the target
    s = score(logits, targets)
    assert not s["exact"] and s["targets_reproduced"] == 1 and s["min_margin"] == pytest.approx(-0.5)


def _load(folder: Path, dtype=torch.float32):
    """Exactly what a user of the folder runs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder / "backbone", dtype=dtype),
                                     folder / "adapter").eval()


def _data(folder: Path):
    from safetensors.torch import load_file

    meta = json.loads((folder / "data" / "data.json").read_text())
    return load_file(str(folder / "data" / "data.safetensors")), meta


@pytest.mark.parametrize("argv", [TINY, EVERY], ids=["last", "every"])
def test_save_and_peft_generate_reproduce_every_target(tmp_path, capsys, argv):
    folder = tmp_path / "prompt"
    assert main(["memorize", "search", *argv, "--save", str(folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["m_star"] is not None and result["saved"]["verify"]["exact"]
    tensors, meta = _data(folder)
    assert meta["target"] == (argv[argv.index("--target") + 1] if "--target" in argv else "last")
    assert torch.equal(tensors["scored"], tensors["targets"] != IGNORE)
    info = json.loads((folder / "memorize.json").read_text())
    assert info["m"] == result["m_star"] and info["settings"]["readout"] == "vocab"
    model = _load(folder)
    assert model.prompt_encoder["default"].embedding.weight.shape == (result["m_star"], int(argv[argv.index(
        "--d-model") + 1]))
    out = generated(model, tensors["tokens"], tensors["targets"], meta["target"])
    scored = tensors["scored"] if meta["target"] == "every" else tensors["scored"][:, -1:]
    want = tensors["targets"] if meta["target"] == "every" else tensors["targets"][:, -1:]
    assert torch.equal(out[scored], want[scored])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "prompt"
    assert main(["memorize", "search", *TINY, "--save", str(folder)]) == 0
    return folder


def test_verify_exact_then_mismatch_after_a_prompt_vector_is_perturbed(saved, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    capsys.readouterr()
    assert main(["memorize", "verify", str(saved), "--json"]) == 0
    good = json.loads(capsys.readouterr().out)
    assert good["exact"] and good["targets_reproduced"] == good["n_targets"] == 3 and good["min_margin"] > 0
    assert good["dtype"] == "float64" and good["generated_reproduced"] == 3
    bad = tmp_path / "bad"
    shutil.copytree(saved, bad)
    weights = bad / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    (name,) = tensors
    tensors[name][0] = -20 * tensors[name][0]
    save_file(tensors, str(weights))
    assert main(["memorize", "verify", str(bad), "--json"]) == 4
    out = json.loads(capsys.readouterr().out)
    assert not out["exact"] and out["min_margin"] < 0 and out["targets_reproduced"] < out["n_targets"]
    assert main(["memorize", "verify", str(bad)]) == 4
    assert "NOT exact" in capsys.readouterr().out


def test_bad_folders_exit_2_in_one_line(saved, tmp_path, capsys):
    import shutil

    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    no_adapter = tmp_path / "no_adapter"
    shutil.copytree(saved, no_adapter)
    shutil.rmtree(no_adapter / "adapter")
    torn = tmp_path / "torn"
    shutil.copytree(saved, torn)
    (torn / "data" / "data.safetensors").write_bytes(b"not safetensors")
    cases = {"missing": "is not a folder", "empty": "is missing", "file": "is not a folder",
             "no_adapter": "adapter/adapter_config.json is missing", "torn": "not a readable safetensors"}
    for name, words in cases.items():
        capsys.readouterr()
        assert main(["memorize", "verify", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, (name, err)


@pytest.mark.parametrize("extra, words", [(["--gen-steps", "1"], "--gen-steps 0"),
                                          (["--readout", "classes"], "--readout vocab"),
                                          (["--no-norm"], "--no-norm")])
def test_save_refuses_what_does_not_convert_before_fitting(tmp_path, capsys, extra, words):
    folder = tmp_path / "prompt"
    assert main(["memorize", "search", *TINY, *extra, "--save", str(folder)]) == 2
    assert words in capsys.readouterr().err and not folder.exists()


def test_save_does_not_overwrite_silently(saved, capsys):
    before = (saved / "memorize.json").read_bytes()
    assert main(["memorize", "search", *TINY, "--save", str(saved)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (saved / "memorize.json").read_bytes() == before


def test_nothing_memorized_saves_nothing(tmp_path, capsys):
    folder = tmp_path / "prompt"
    argv = [*TINY[:TINY.index("--max-steps")], "--max-steps", "1", *TINY[TINY.index("--max-steps") + 2:]]
    assert main(["memorize", "search", *argv, "--save", str(folder)]) == 2
    assert "no prompt to --save" in capsys.readouterr().err and not folder.exists()


def test_sweep_folders_from_before_the_criterion_read_as_the_restricted_readout(tmp_path):
    """A folder's config without ``readout`` was run with the n_classes read-out: its points keep their ids (the late
    setting at that value is out of the id) and are read as readout "classes"; new configs spell "vocab" out."""
    import yaml

    from attnlab.memorize.settings import DEFAULTS
    from attnlab.memorize.sweep import folder_config, point_id, stored_config

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"base": {"backbone_draw": "invariant"},
                                                          "experiments": {"a": {"n_pairs": 4}}}))
    assert folder_config(tmp_path)["base"]["readout"] == "classes"
    assert stored_config({"base": {}})["base"]["readout"] == "vocab"
    assert "readout" not in stored_config({"base": {"readout": "classes"}})["base"]
    old = {k: v for k, v in DEFAULTS.items() if k != "readout"}
    assert point_id({**DEFAULTS, "readout": "classes"}) == point_id(old) != point_id(DEFAULTS)


def test_save_with_prompt_seeds_keeps_a_prompt_that_memorized_at_m_star_q(tmp_path, capsys):
    folder = tmp_path / "prompt"
    assert main(["memorize", "search", *TINY, "--max-steps", "60", "--prompt-seeds", "5", "--n-boot", "50",
                 "--save", str(folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    info = json.loads((folder / "memorize.json").read_text())
    assert info["m"] == result["p_of_m"]["m_star"] and info["fit"]["memorized"] and "restart" in info["fit"]
    assert result["saved"]["verify"]["exact"]
