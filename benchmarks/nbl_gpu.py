"""The paper's speed setting on a GPU (issue 13, item 4): a Llama-3-8B-shaped model (random weights: the config is
enough), 12 of its 32 attention layers replaced by linear maps, prefill and cached decode at 2k and 8k prompts
against the original, interleaved repeats (median), with the analytic FLOP and byte ceilings beside each ratio
(:func:`attnlab.nbl.bench.bench_pair`). About 16 GB per model in bfloat16 (two models: 32 GB).

Run: python benchmarks/nbl_gpu.py [--device cuda] [--dtype bfloat16] [--prompts 2048 8192] [--batch 1]
     [--replace 12] [--decode 32] [--repeats 3]      -> benchmarks/results/nbl_speed_gpu.json
     python benchmarks/nbl_gpu.py --tiny --device cpu  (the same path on a 4-layer model, for a check on the CPU;
     writes benchmarks/results/nbl_speed_tiny.json, or --out FILE)
Without CUDA and without --device cpu it says so in one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from attnlab.core.atomic import atomic_write_json
from attnlab.core.runtime import environment

RESULTS = Path(__file__).parent / "results"

#: Llama-3-8B (meta-llama/Meta-Llama-3-8B's config.json), and a 4-layer model of the same family for --tiny.
SHAPES = {"llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0,
                            max_position_embeddings=8192 + 512),
          "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="default bfloat16 on CUDA, float32 elsewhere (bfloat16 attention on a CPU needs AVX-512)")
    p.add_argument("--prompts", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--batch", type=int, nargs="+", default=[1])
    p.add_argument("--replace", type=int, default=12, help="attention layers replaced (the last ones; default 12)")
    p.add_argument("--decode", type=int, default=32, help="decoded tokens per measurement (default 32)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="a 4-layer model, 2 replaced, prompts 32 and 64")
    p.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/nbl_speed_{gpu,tiny}.json)")
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("nbl_gpu.py: needs a CUDA GPU (none visible); --tiny --device cpu checks the path on the CPU",
              file=sys.stderr)
        return 2
    from transformers import LlamaConfig

    from attnlab.nbl.bench import bench_pair, random_pair

    shape = "tiny" if args.tiny else "llama3-8b"
    config = LlamaConfig(**SHAPES[shape])
    prompts, replace = ([32, 64], 2) if args.tiny else (args.prompts, args.replace)
    layers = list(range(config.num_hidden_layers - replace, config.num_hidden_layers))
    model, reference = random_pair(config, layers, args.device, getattr(torch, args.dtype))
    result = bench_pair(model, reference, prompt_lengths=prompts, batch_sizes=args.batch,
                        decode_tokens=args.decode, repeats=args.repeats, progress=True)
    result.update(shape=shape, config=config.to_dict(), replaced_layers=layers, device=args.device,
                  dtype=args.dtype, params=sum(p.numel() for p in reference.parameters()),
                  environment=environment())
    if args.device.startswith("cuda"):
        result["max_memory_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
    out = args.out or RESULTS / f"nbl_speed_{'tiny' if args.tiny else 'gpu'}.json"
    atomic_write_json(out, result)
    print(result["table"])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
