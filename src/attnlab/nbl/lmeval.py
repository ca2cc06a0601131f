"""The optional hook to EleutherAI's lm-evaluation-harness (issue 4, item 6): the paper reports its
accuracy numbers with it. Tasks run on any model in memory (linearized or not) through ``HFLM``; a task is
a harness name (its data comes from the HF hub) or a YAML task of your own under ``include_path`` (local
data files work offline)."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import AttnlabError

INSTALL_HINT = "pip install lm_eval"


def task_manager(tasks: list[str], include_path: str | Path | None = None):
    """The harness's ``TaskManager`` after checking, before any model runs, that it is installed and knows
    every task in ``tasks`` (its own and those under ``include_path``)."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise AttnlabError(f"--lm-eval needs lm-evaluation-harness, which is not installed ({INSTALL_HINT})") from None
    if include_path is not None and not Path(include_path).is_dir():
        raise AttnlabError(f"--lm-eval-include {include_path}: not a directory of task YAML files")
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise AttnlabError(f"unknown lm-eval task(s): {', '.join(unknown)} (list them with `lm-eval ls tasks`, "
                           "or give a directory of your own task YAMLs with --lm-eval-include)")
    return manager


def run_tasks(model, tokenizer, tasks: list[str], manager, limit: int | None = None, batch_size: int = 8,
              seed: int = 0) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from ``lm_eval.simple_evaluate`` on ``model`` (numeric metrics only);
    ``manager`` comes from :func:`task_manager`, ``limit`` caps the examples per task, ``seed`` seeds the
    harness (few-shot sampling included)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    try:
        out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, log_samples=False,
                              random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                              fewshot_random_seed=seed)
    except (OSError, ConnectionError) as e:  # a hub dataset that cannot be fetched (offline machine)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AttnlabError(f"lm-eval could not load a task's data ({first}); offline, use a local task "
                           "(--lm-eval-include DIR with a YAML whose dataset_kwargs.data_files are local)") from None
    return {task: {metric: float(v) for metric, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for task, metrics in out["results"].items()}
