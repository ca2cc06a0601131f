"""Issue 14, item 2: data, backbone and prompt seeds apart, and a backbone whose weights do not depend on
max_len = seq_len + gen_steps (so the T and seq_len experiments compare one backbone); the sweep folders logged
before (the legacy draw, one seed) keep their point ids."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from attnlab.cli import main
from attnlab.memorize.backbone import POSITION_CHUNK, Backbone, position_rows
from attnlab.memorize.search import backbone_probe, prompt_seed
from attnlab.memorize.settings import DEFAULTS, INITS, SEEDED_PARTS, part_seed
from attnlab.memorize.sweep import (
    LOG,
    build,
    folder_config,
    load_config,
    point_id,
    results,
    run_identity,
    run_sweep,
    stored_config,
)

ROOT = Path(__file__).resolve().parents[2]
SMALL = {**DEFAULTS, "n_pairs": 4, "seq_len": 2, "vocab": 8, "n_classes": 4, "d_model": 16, "n_heads": 2,
         "n_layers": 2, "d_ff": 32, "train_steps": 3, "max_steps": 1, "m_max": 2, "restarts": 1}
#: (seq_len, gen_steps): max_len from 2 to 40, across one and several chunks of position rows
SHAPES = [(2, 0), (2, 4), (8, 0), (8, 2), (16, 1), (32, 8)]


def _backbone(**changes) -> Backbone:
    return Backbone(build({**SMALL, **changes})[1])


def _not_positions(bb: Backbone) -> dict[str, torch.Tensor]:
    return {k: v for k, v in bb.state_dict().items() if k != "wpe.weight"}


@pytest.mark.parametrize("init", INITS)
def test_the_backbone_is_bit_identical_across_seq_len_and_generation_steps(init):
    ref = _backbone(init=init, seq_len=SHAPES[0][0], gen_steps=SHAPES[0][1])
    for seq_len, gen_steps in SHAPES[1:]:
        bb = _backbone(init=init, seq_len=seq_len, gen_steps=gen_steps)
        assert bb.cfg.max_len == seq_len + gen_steps
        for name, weight in _not_positions(ref).items():
            assert torch.equal(weight, bb.state_dict()[name]), (seq_len, gen_steps, name)
        n = min(ref.cfg.max_len, bb.cfg.max_len)  # the positions both have: the same rows
        assert torch.equal(ref.wpe.weight[:n], bb.wpe.weight[:n])


def test_the_legacy_draw_is_what_made_the_backbones_differ():
    """What the invariant draw fixes (and what the committed sweeps were drawn with): every block moves with T."""
    a, b = _backbone(backbone_draw="legacy"), _backbone(backbone_draw="legacy", gen_steps=1)
    assert not torch.equal(a.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)


def test_position_rows_are_prefix_stable_and_a_stream_of_their_own():
    rows = position_rows(3, 3 * POSITION_CHUNK + 5, 8)
    for n in (1, POSITION_CHUNK - 1, POSITION_CHUNK, POSITION_CHUNK + 1, 2 * POSITION_CHUNK):
        assert torch.equal(position_rows(3, n, 8), rows[:n])
    assert not torch.equal(position_rows(4, 8, 8), rows[:8])
    main_stream = torch.randn(8, 8, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(main_stream, rows[:8])


def _parts(settings: dict) -> dict[str, object]:
    """What each seeded part drew for ``settings``: the data, the backbone's weights, the first prompt probed."""
    data, cfg, tune = build(settings)
    bb = Backbone(cfg)
    probe = backbone_probe(bb, data, 0, tune, part_seed(settings, "prompt"))(1, 0)
    return {"data": (data.tokens.tolist(), data.targets.tolist()),
            "backbone": [v.tolist() for v in bb.state_dict().values()], "prompt": probe["seed"]}


@pytest.mark.parametrize("part", SEEDED_PARTS)
def test_each_seed_moves_its_own_part_only(part):
    ref = _parts(SMALL)
    moved = _parts({**SMALL, f"{part}_seed": 5})
    assert moved[part] != ref[part]
    assert all(moved[other] == ref[other] for other in SEEDED_PARTS if other != part)
    assert _parts({**SMALL, f"{part}_seed": SMALL["seed"]}) == ref  # its own seed equal to seed: the same draw


def test_point_ids_of_logs_from_before_the_new_settings_are_kept():
    old = {k: v for k, v in SMALL.items() if k not in ("backbone_draw", *(f"{p}_seed" for p in SEEDED_PARTS))}
    legacy = {**SMALL, "backbone_draw": "legacy"}
    assert point_id(legacy) == point_id(old)
    assert point_id({**legacy, "data_seed": 0, "backbone_seed": 0, "prompt_seed": 0}) == point_id(old)
    assert point_id(SMALL) != point_id(old)  # the invariant backbone is another point
    assert point_id({**legacy, "prompt_seed": 1}) != point_id(old)


def test_the_committed_sweep_folders_are_read_as_the_legacy_points_they_logged():
    for folder in ("docs/results/memorize", "docs/results/memorize/large_budget"):
        logged = {json.loads(line)["point"] for line in (ROOT / folder / LOG).read_text().splitlines()
                  if json.loads(line)["kind"] == "result"}
        rows = results(ROOT / folder)
        assert {r["point"] for r in rows} == logged and logged
        assert {r["settings"]["backbone_draw"] for r in rows} == {"legacy"}
        assert folder_config(ROOT / folder)["base"]["backbone_draw"] == "legacy"


def test_the_committed_configs_resume_their_folders():
    """The configs behind docs/results/memorize name the legacy draw and are the same runs as the folders."""
    for config, folder in (("cpu_sweep.yaml", "docs/results/memorize"),
                           ("large_budget.yaml", "docs/results/memorize/large_budget")):
        marker = json.loads((ROOT / folder / ".attnlab.json").read_text())["config"]
        assert run_identity(load_config(ROOT / "configs/memorize" / config)) == marker


def test_a_new_folder_keeps_its_draw_and_reads_back_the_points_it_ran(tmp_path):
    config = {"base": {k: SMALL[k] for k in ("n_pairs", "seq_len", "vocab", "n_classes", "d_model", "n_heads",
                                            "n_layers", "d_ff", "max_steps", "m_max", "restarts")},
              "experiments": {"draw": {"variants": [{}, {"backbone_draw": "legacy"}]}}}
    rows = run_sweep(config, tmp_path / "s", progress=False, quiet=True)
    saved = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text())
    assert saved == stored_config(config) and saved["base"]["backbone_draw"] == "invariant"
    assert sorted(r["settings"]["backbone_draw"] for r in rows) == ["invariant", "legacy"]
    legacy_only = {**config, "base": {**config["base"], "backbone_draw": "legacy"}}
    assert "backbone_draw" not in stored_config(legacy_only)["base"]  # kept as the older folders have it


def test_cli_seed_flags(capsys):
    tiny = ["memorize", "search", "--n-pairs", "4", "--seq-len", "2", "--vocab", "8", "--n-classes", "4",
            "--d-model", "8", "--n-heads", "2", "--n-layers", "1", "--d-ff", "8", "--max-steps", "1", "--m-max", "1",
            "--restarts", "1", "--json"]
    assert main([*tiny, "--prompt-seed", "7", "--backbone-draw", "legacy"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["prompt_seed"] == 7 and out["settings"]["data_seed"] is None
    assert out["settings"]["backbone_draw"] == "legacy"
    assert out["probes"][0]["seed"] == prompt_seed(7, 1, 0)  # what the probe's prompt was drawn with
    assert main([*tiny, "--data-seed", "-1"]) == 2
    assert "must be an integer >= 0, got" in capsys.readouterr().err
