"""Progress bars (tqdm, on stderr) for every loop a person waits for, with one policy for the package.

- On a terminal: a live bar, redrawn up to 10 times a second; nested bars (``leave=False``) vanish
  when done.
- Anywhere else (``dvc repro 2> log``, CI, a Prefect worker, MLflow's captured output) the bars stay
  on, because those are the logs people read when a stage is slow, but they are quiet: a loop shows
  only once it has run for ``LOG_INTERVAL_S`` seconds, then prints one line per interval and keeps
  its final line (count, elapsed time, rate). tqdm's own ``disable=None`` would drop them all, and an
  unthrottled bar would write a line per redraw.
- The environment wins over this policy (read at each call, with tqdm's names): ``TQDM_DISABLE=1``
  turns every bar off, ``TQDM_MININTERVAL=5`` / ``TQDM_DELAY=0`` make the log lines more frequent,
  ``TQDM_LEAVE=0`` clears finished bars.

``desc`` names the stage and, where there is one, the class: ``"sort: sorter labels"``,
``"synthesize mild: generate round 0"``, ``"audit evaluate_mild: features (synthetic)"``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable

LOG_INTERVAL_S = 30.0  # seconds between log lines when stderr is not a terminal


def progress(iterable: Iterable[Any] | None = None, *, desc: str, total: int | None = None, unit: str = "it",
             leave: bool = True, disable: bool = False, **kwargs: Any) -> Any:
    """A ``tqdm`` bar over ``iterable`` (or a manual one: ``total`` + ``update``) on stderr, named ``desc``.

    ``leave`` applies on a terminal (nested bars pass False); off a terminal the final line is always
    kept. ``disable`` turns this bar off (so does ``TQDM_DISABLE``). Other keyword arguments go to tqdm.
    """
    from tqdm import tqdm

    if sys.stderr.isatty():
        policy: dict[str, Any] = {"mininterval": 0.1, "delay": 0.0, "leave": leave, "dynamic_ncols": True}
    else:
        policy = {"mininterval": LOG_INTERVAL_S, "delay": LOG_INTERVAL_S, "leave": True}
    policy.update(kwargs)
    for key in ("mininterval", "delay", "leave"):
        raw = os.environ.get(f"TQDM_{key.upper()}")
        if raw is not None:
            policy[key] = _flag(raw) if key == "leave" else _seconds(raw, f"TQDM_{key.upper()}")
    disable = disable or _flag(os.environ.get("TQDM_DISABLE", ""))
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, disable=disable, **policy)


def _flag(raw: str) -> bool:
    return raw.strip().lower() not in ("", "0", "false", "no", "off")


def _seconds(raw: str, name: str) -> float:
    try:
        return float(raw)
    except ValueError:
        from acneops.core.errors import AcneopsError

        raise AcneopsError(f"environment variable {name}={raw!r}: expected seconds (a number), e.g. {name}=5") from None
