"""attnlab.machines: Turing machine -> Post machine -> constant-bit-size transformer (Li & Wang 2025).

    from attnlab.machines import load_machine, tm_to_pm, compile_pm, certify, run_machine
    tm = load_machine("bb4")                 # library name, bbchallenge string or YAML file
    model = compile_pm(tm_to_pm(tm).pm, 13)  # one layer, one head, hardmax, weights in {-1,0,1}
    certify(model).exact                     # exhaustive certificate over (token, front symbol) pairs
    run_machine(tm, "", executor="kv")       # checked against the reference TM at every step
"""

from __future__ import annotations

from pathlib import Path

from ..core.records import RunRecord
from .compile import CompiledTransformer, compile_pm, load_compiled
from .executors import EXECUTORS, certify, make_executor
from .library import LIBRARY, library_machine
from .machine import PostMachine, TuringMachine
from .network import MachineTransformer, load_module, network_logits
from .parse import load_machine, parse_bbchallenge, parse_yaml
from .post import Translation, tm_to_pm
from .reference import PMRun, TMRun, run_tm
from .simulate import RunResult, minimal_window, run_machine


def compile_machine(machine: TuringMachine | PostMachine, window: int) -> CompiledTransformer:
    """Compile a Turing machine (through its Post machine) or a Post machine for window ``window``."""
    return compile_pm(machine if isinstance(machine, PostMachine) else tm_to_pm(machine).pm, window)


def tour(out_dir: Path, seed: int = 0) -> RunRecord:
    from .tourstep import tour as _tour

    return _tour(Path(out_dir), seed)


__all__ = ["CompiledTransformer", "EXECUTORS", "LIBRARY", "MachineTransformer", "PMRun", "PostMachine",
           "RunResult", "TMRun", "Translation", "TuringMachine", "certify", "compile_machine", "compile_pm",
           "library_machine", "load_compiled", "load_machine", "load_module", "make_executor", "minimal_window",
           "network_logits", "parse_bbchallenge", "parse_yaml", "run_machine", "run_tm", "tm_to_pm", "tour"]
