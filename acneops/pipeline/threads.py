"""How many CPU threads each stage of the pipeline computes with, read from params.yaml: what `acneops repro` reserves
for a stage so that the threads of the stages running side by side never outnumber the cores.

Here, not in acneops.stages: acneops.stages/__init__ is in every stage's code closure (its dvc.yaml deps), and what
only the scheduler needs must not rerun every stage when it changes.
"""

from __future__ import annotations

from typing import Any

from acneops.core.config import ConfigError, section
from acneops.stages import STAGES
from acneops.stages.params import foreach_values

# The key that fixes a stage's CPU thread count (0 = one per core), per stage of dvc.yaml that has one; every
# other acneops stage runs torch's default, one thread per core.
THREAD_KEYS = {"train_gan": "workers", "train_classifier": "threads"}


def stage_threads(params: dict[str, Any], stage: str, cores: int) -> int:
    """The CPU threads stage ``stage`` (DVC addressing: ``train_gan@mild``, ``restore``) computes with, by params
    (``cores`` when params say 0 or the acneops stage sets no count): what `acneops repro` reserves for it. A stage
    that is not acneops' (a user's own command in dvc.yaml) counts as one thread, as ``make -j`` counts a job."""
    section_name, _, name = stage.partition("@")
    if section_name not in STAGES:
        return 1
    key = THREAD_KEYS.get(section_name)
    if key is None:
        return cores
    values = foreach_values(params, section_name, name)[0] if name else dict(section(params, section_name))
    threads = values.get(key, 0)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ConfigError(f"params.yaml [{section_name}{'.runs.' + name if name else ''}.{key}]: must be an "
                          f"integer >= 0 (0 = one per core), got {threads!r}")
    return threads or cores
