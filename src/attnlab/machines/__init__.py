"""attnlab.machines: Turing machine -> Post machine -> constant-bit-size transformer (Li & Wang 2025).

    from attnlab.machines import load_machine, tm_to_pm, compile_pm, certify, run_machine
    tm = load_machine("bb4")                 # library name, bbchallenge string or YAML file
    model = compile_pm(tm_to_pm(tm).pm, 13)  # one layer, one head, hardmax, weights in {-1,0,1}
    certify(model).complete                  # closed certificate: lemma B at every W, FFN on every pair
    run_machine(tm, "", executor="kv")       # checked against the reference TM at every step

The names below are imported on first use (PEP 562), so ``import attnlab.machines`` (and the CLI's parser)
costs nothing; only :class:`MachineTransformer`, :func:`load_module` and :class:`SoftmaxMachine` import torch.
"""

from __future__ import annotations

from ..core.lazy import lazy_exports

#: public name -> the submodule that defines it
_EXPORTS = {
    "TuringMachine": "machine", "PostMachine": "machine",
    "parse_bbchallenge": "parse", "parse_yaml": "parse",
    "LIBRARY": "library", "library_machine": "library", "load_machine": "library",
    "Translation": "post", "tm_to_pm": "post",
    "PMRun": "reference", "TMRun": "reference", "run_tm": "reference",
    "CompiledTransformer": "compile", "compile_pm": "compile", "compile_machine": "compile",
    "load_compiled": "compile",
    "network_logits": "network",
    "MachineTransformer": "module", "load_module": "module",
    "EXECUTORS": "registry",
    "Certificate": "certificate", "certify": "certificate", "make_executor": "executors",
    "RunResult": "simulate", "minimal_window": "simulate", "run_machine": "simulate",
    "Export": "artifact", "build_export": "artifact", "write_export": "artifact",
    "exact_inverse_temperature": "softmax", "SoftmaxMachine": "sdpa",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
