"""The built-in machines, addressable by name, and :func:`load_machine`, which resolves what a user gives
(a library name, a YAML file or a bbchallenge string). Kept as strings so no package data is needed; each
goes through the same parsers as user files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import AttnlabError
from .machine import PostMachine, TuringMachine
from .parse import BBCHALLENGE, parse_bbchallenge, parse_yaml, parse_yaml_with_input


@dataclass(frozen=True)
class Entry:
    spec: str  # YAML text or a bbchallenge string
    input: str  # the example input used by `machines run NAME` without --input
    description: str
    long: bool = False  # the transformer run at the minimal window is beyond a test (> 10^9 tokens)
    published: tuple[int, int] | None = None  # busy beavers: (steps, non-blank symbols) from the cited source


def _tm(name: str, blank: str, start: str, rules: str) -> str:
    """YAML for a TM from rules ``q a -> w M q'`` (one per line): the library stays readable."""
    by_state: dict[str, list[str]] = {}
    for line in rules.strip().splitlines():
        q, a, _, w, m, q2 = line.split()
        by_state.setdefault(q, []).append(f'"{a}": ["{w}", {m}, {q2}]')
    body = "\n".join(f"  {q}: {{{', '.join(r)}}}" for q, r in by_state.items())
    return f'name: {name}\nblank: "{blank}"\nstart: {start}\ntransitions:\n{body}\n'


LIBRARY: dict[str, Entry] = {
    "binc": Entry(_tm("binc", "_", "R", """
        R 0 -> 0 R R
        R 1 -> 1 R R
        R _ -> _ L C
        C 1 -> 0 L C
        C 0 -> 1 L H
        C _ -> 1 L H"""), "1011", "binary increment, LSB at the right (1^k: 2k+2 steps)"),
    "uadd": Entry(_tm("uadd", "_", "A", """
        A 1 -> 1 R A
        A 0 -> 1 R B
        B 1 -> 1 R B
        B _ -> _ L C
        C 1 -> _ L H"""), "111011", "unary addition 1^a 0 1^b -> 1^(a+b) (a+b+3 steps)"),
    "pal": Entry(_tm("pal", "_", "S", """
        S a -> _ R Ra
        S b -> _ R Rb
        S _ -> _ R ACC
        Ra a -> a R Ra
        Ra b -> b R Ra
        Ra _ -> _ L Ca
        Rb a -> a R Rb
        Rb b -> b R Rb
        Rb _ -> _ L Cb
        Ca a -> _ L Lt
        Ca b -> b L REJ
        Ca _ -> _ R ACC
        Cb b -> _ L Lt
        Cb a -> a L REJ
        Cb _ -> _ R ACC
        Lt a -> a L Lt
        Lt b -> b L Lt
        Lt _ -> _ R S"""), "abba", "palindromes over {a,b}: ACC or REJ (length n accepted in (n+1)(n+2)/2 steps)"),
    "copy": Entry(_tm("copy", "_", "A", """
        A 1 -> X R B
        A _ -> _ L G
        B 1 -> 1 R B
        B _ -> _ R C
        C 1 -> 1 R C
        C _ -> 1 L D
        D 1 -> 1 L D
        D _ -> _ L F
        F 1 -> 1 L F
        F X -> X R A
        G X -> 1 L G
        G _ -> _ R H"""), "111", "unary copy 1^n -> 1^n _ 1^n (2(n+1)^2 steps)"),
    "bcount": Entry(_tm("bcount", "_", "R", """
        R # -> # R R
        R 0 -> 0 R R
        R 1 -> 1 R R
        R _ -> _ L C
        C 1 -> 0 L C
        C 0 -> 1 R R
        C # -> # R H"""), "#0000", "binary counter through all 2^k values of '#0^k' (2^(k+2)-1 steps, k+2 cells)"),
    "parens": Entry(_tm("parens", "_", "I", """
        I B -> B R R
        R ( -> ( R R
        R ) -> * L M
        R * -> * R R
        R E -> E L V
        M B -> * L F
        M ( -> * R R
        M * -> * L M
        V ( -> * L F
        V * -> * L V
        V B -> B R T"""), "B()((()(()))())E", "balanced parentheses between B and E (Wei-Chen-Ma machine): T or F"),
    "bb1": Entry("1RZ---", "", "busy beaver 1 (1 step, 1 one)", published=(1, 1)),
    "bb2": Entry("1RB1LB_1LA1RZ", "", "busy beaver 2 (6 steps, 4 ones)", published=(6, 4)),
    "bb3": Entry("1RB1RZ_1LB0RC_1LC1LA", "", "busy beaver 3, step champion (21 steps, 5 ones)",
                 published=(21, 5)),
    "bb3sigma": Entry("1RB1RZ_0RC1RB_1LC1LA", "", "busy beaver 3, ones champion (14 steps, 6 ones)",
                      published=(14, 6)),
    "bb4": Entry("1RB1LB_1LA0LC_1RZ1LD_1RD0RA", "", "busy beaver 4 (107 steps, 13 ones)",
                 published=(107, 13)),
    "bb5": Entry("1RB1LC_1RC1RB_1RD0LE_1LA1LD_1RZ0LA", "",
                 "busy beaver 5 (47,176,870 steps, 4098 ones; 12,289 cells)", long=True,
                 published=(47_176_870, 4098)),
    # Multi-symbol champions, from Pascal Michel's historical survey of busy beaver competitions
    # (https://webusers.imj-prg.fr/~pascal.michel/ha.html, tables tm23 and tm24) and the bbchallenge wiki
    # (https://wiki.bbchallenge.org/wiki/BB(2,4): S = 3,932,964 and Sigma = 2,050, found by T. and S. Ligocki in
    # 2005, proven maximal in Coq-BB5 in 2024). Sigma counts non-blank symbols; the halting step is counted.
    "bb2x3": Entry("1RB2LB1RZ_2LA2RB1LB", "", "busy beaver 2-state 3-symbol champion (38 steps, 9 non-blank)",
                   published=(38, 9)),
    "bb2x4": Entry("1RB2LA1RA1RA_1LB1LA3RB1RZ", "",
                   "busy beaver 2-state 4-symbol champion (3,932,964 steps, 2,050 non-blank; 2,050 cells, "
                   "4.0e9 tokens at W=2049: run a --max-steps prefix)", long=True,
                   published=(3_932_964, 2050)),
    # Minsky's 7-state 4-symbol universal machine (simulates 2-tag systems), transcribed from
    # Ngoguey42/ft_turing pseudo_asm/minsky_utm.s, with a 2-state preamble that walks to the first y.
    # The example program: tag productions a1->a2, a2->a2a3, a3->halt, on the word a2 a2 a2.
    "utm": Entry(_tm("utm", "0", "S", """
        S 0 -> 0 R S
        S 1 -> 1 R S
        S A -> A R S
        S y -> y L T
        T 0 -> 0 R q2
        T 1 -> 1 R q2
        T A -> A R q2
        T y -> y R q2
        q1 y -> 0 L q1
        q1 0 -> 0 L q1
        q1 1 -> 1 L q2
        q1 A -> 1 L q1
        q2 y -> 0 L q1
        q2 0 -> y R q2
        q2 1 -> A R q2
        q2 A -> y R q6
        q3 y -> y L q3
        q3 0 -> 0 R H
        q3 1 -> A L q3
        q3 A -> 1 L q4
        q4 y -> y L q4
        q4 0 -> y R q5
        q4 1 -> 1 L q7
        q4 A -> 1 L q4
        q5 y -> y R q5
        q5 0 -> y L q3
        q5 1 -> A R q5
        q5 A -> 1 R q5
        q6 y -> y R q6
        q6 0 -> A L q3
        q6 1 -> A R q6
        q6 A -> 1 R q6
        q7 y -> 0 R q7
        q7 0 -> y R q6
        q7 1 -> 1 R q7
        q7 A -> 0 R q2"""), "110101110000010011011yyAyyAyy",
                 "Minsky's 7-state 4-symbol universal machine running a 2-tag program from its tape"),
    "rotate": Entry("""name: rotate
kind: post
blank: "_"
start: s
transitions:
  s: {"a": ["b", s], "b": ["a", s], "_": ["_", h]}
""", "ab_ab", "a Post machine written directly: swap a<->b around the queue, halt at the first blank"),
}


#: Library machines whose transformer run at the minimal window is too long for a test or the tour
#: (BB5: 2.9e11 tokens at W=12,288; BB(2,4): 4.0e9 tokens at W=2,049); run them on a ``max_steps`` prefix.
LONG: frozenset[str] = frozenset(name for name, entry in LIBRARY.items() if entry.long)


def library_machine(name: str) -> TuringMachine | PostMachine:
    entry = LIBRARY[name]
    if entry.spec.lstrip().startswith("name:"):
        return parse_yaml(entry.spec, source=f"library:{name}", name=name)
    return parse_bbchallenge(entry.spec, name=name)


def load_machine(spec: str) -> TuringMachine | PostMachine:
    """SPEC is a library name, a YAML file or a bbchallenge string."""
    return load_spec(spec)[0]


def load_spec(spec: str) -> tuple[TuringMachine | PostMachine, str]:
    """The machine SPEC names and its default input: the library example, the YAML file's ``input:``, else ""."""
    if spec in LIBRARY:
        return library_machine(spec), LIBRARY[spec].input
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise AttnlabError(f"machine file not found: {path} (give a library name, a YAML file or a "
                               f"bbchallenge string; see `attnlab machines list`)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise AttnlabError(f"{path}: not UTF-8 text (byte {e.start}); a machine file is YAML") from None
        except OSError as e:
            raise AttnlabError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
        machine, text = parse_yaml_with_input(text, source=str(path))
        return machine, text or ""
    if BBCHALLENGE.match(spec) and any(c.isdigit() for c in spec):
        return parse_bbchallenge(spec), ""
    raise AttnlabError(f"unknown machine {spec!r}: not a library name, a YAML file or a bbchallenge string "
                       f"(see `attnlab machines list`)")
