"""Usefulness of the synthetic data, measured with seeds: classifier variants trained and scored side by side.

    .venv/bin/python benchmarks/usefulness.py --repo PATH [--variants default,px32,scarce25,mix] [--seeds 0,1,2]

``PATH`` is a checkout where the default pipeline has run (`acneops repro`: datasets/restored and
datasets/synthetic exist, e.g. the clone `benchmarks/pipeline.py --keep` leaves) at the commit of this script
(the stages run there with ``python -m acneops``, which imports that checkout's code). Each variant is a set of
params overrides on top of that checkout's params.yaml; for each, every scenario of the variant is trained with
the command DVC runs (`acneops run train_classifier --name S --params F`, two trainings at a time on 2 cores,
one thread each) with ``--seeds``, into a temporary folder, then scored by `acneops run evaluate` (classifiers
only). Nothing in the checkout is written; MLflow goes to a temporary store.

It prints per variant and scenario: the validation macro-F1 over seeds (what a choice between variants may be
based on: val is the split meant for it) and the real-test figures (mean ± SD over seeds, 95% bootstrap interval
of the seed mean), then the paired comparisons, and the trainings' wall time. The test figures are reported,
never used to choose.

Variants:
- ``default``: params.yaml as it is (synthetic / real / augmented);
- ``px32`` / ``px48``: the classifiers at the restored images' own 32 px, or at 48 px, instead of upscaled to 64 px;
- ``scarce25``: real and augmented on 25% of the real train images per class (the regime where the second
  method's augmentation should help most);
- ``mix``: augmented with 50 and 150 class-filtered synthetic images per class (100 is ``filtered``'s; 0 is
  ``default``'s ``real``): the mix is chosen on val;
- ``filtered``: synthetic and augmented on a set exported with ``synthesize.class_filter`` = the severity sorter;
- ``psi07``: synthetic and augmented on a set exported with truncation psi 0.7;
- ``conditional``: one class-conditional StyleGAN2 (``train_gan`` run with ``conditional: true``) fine-tuned from
  G_all on every class for 20 kimg (the four per-class fine-tunes' 4 x 5), its export, synthetic and augmented, and
  its class fidelity and FD per class: the alternative to the hierarchy on the same budget;
- ``sorted``: the published per-severity training sets (G_all's sorted samples) for the three severity fine-tunes
  instead of the real class images, the export (class filter as params.yaml has it), classifiers and generators;
- ``ada``: the four per-class fine-tunes with adaptive discriminator augmentation (``ada: true``, ``ada_kimg: 5``),
  their export, classifiers and generators.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from gan_reference import (
    machine,  # benchmarks/: the machine line every benchmark prints
)

from acneops.pipeline.schedule import run_graph

SYNTHETIC = "<variant synthetic set>"
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {  # variant -> scenario -> train_classifier.runs overrides
    "default": {"synthetic": {}, "real": {}, "augmented": {}},
    "px32": {"synthetic": {"img_size": 32}, "real": {"img_size": 32}, "augmented": {"img_size": 32}},
    "px48": {"synthetic": {"img_size": 48}, "real": {"img_size": 48}, "augmented": {"img_size": 48}},
    "scarce25": {"real_scarce": {"real_fraction": 0.25, "upstream": "datasets/restored/train"},
                 "augmented_scarce": {"real_fraction": 0.25, "synthetic_dir": "datasets/synthetic",
                                      "synthetic_per_class": 100, "upstream": "datasets/synthetic"}},
    "mix": {f"augmented_{n}": {"synthetic_dir": SYNTHETIC, "synthetic_per_class": n, "upstream": SYNTHETIC}
            for n in (50, 150)},
    "filtered": {"synthetic": {"synthetic_dir": SYNTHETIC, "upstream": SYNTHETIC},
                 "augmented": {"synthetic_dir": SYNTHETIC, "upstream": SYNTHETIC}},
    "psi07": {"synthetic": {"synthetic_dir": SYNTHETIC, "upstream": SYNTHETIC},
              "augmented": {"synthetic_dir": SYNTHETIC, "upstream": SYNTHETIC}},
}
VARIANTS["conditional"] = VARIANTS["sorted"] = VARIANTS["ada"] = VARIANTS["filtered"]
# variants that train a generator first: the class-conditional StyleGAN2 (NVIDIA's c_dim) on every class, from G_all,
# with the budget of the four per-class fine-tunes (4 x 5 kimg), two threads (it runs alone)
CLASSES = ["healthy", "mild", "moderate", "severe"]
GAN = {"conditional": {"cond": {"conditional": True, "labels": CLASSES, "resume_from": "models/gan/all/final.pt",
                                "total_kimg": 20, "workers": 2, "upstream": "models/gan/all"}},
       # the published per-severity training sets: G_all's samples the sorter assigned to each severity (the `sort`
       # stage's datasets/sorted/<severity>), 5 kimg each from G_all as the default's fine-tunes; healthy unchanged
       "sorted": {c: {"labels": [], "image_dir": f"datasets/sorted/{c}", "upstream": f"datasets/sorted/{c}",
                      "resume_from": "models/gan/all/final.pt", "total_kimg": 5, "workers": 1}
                  for c in ("mild", "moderate", "severe")},
       # adaptive discriminator augmentation in the four per-class fine-tunes (5 kimg on ~100 images each, where D
       # overfits first): p moves by 1 in 5 kimg, so it can reach its level within one fine-tune
       "ada": {c: {"labels": [c], "resume_from": "models/gan/all/final.pt", "total_kimg": 5, "workers": 1,
                   "upstream": "models/gan/all", "ada": True, "ada_kimg": 5} for c in CLASSES}}
# variants that first export their own synthetic set (`acneops run synthesize` with these overrides into the
# variant's folder; the marker SYNTHETIC above stands for it)
SYNTHESIZE = {"filtered": {"class_filter": "models/classifier/sorter/best.pt"}, "psi07": {"psi": 0.7},
              "mix": {"class_filter": "models/classifier/sorter/best.pt"},
              "conditional": {}, "sorted": {}, "ada": {}}
PAIRS = {"default": [["augmented", "real"], ["synthetic", "real"]],
         "px32": [["augmented", "real"], ["synthetic", "real"]],
         "px48": [["augmented", "real"], ["synthetic", "real"]],
         "scarce25": [["augmented_scarce", "real_scarce"]],
         "mix": [["augmented_150", "augmented_50"]],
         "filtered": [["augmented", "synthetic"]], "psi07": [["augmented", "synthetic"]],
         "conditional": [["augmented", "synthetic"]], "sorted": [["augmented", "synthetic"]],
         "ada": [["augmented", "synthetic"]]}


def variant_params(repo: Path, variant: str, work: Path, seeds: list[int]) -> dict[str, Any]:
    """The checkout's params with the variant's runs, seeds and output folders under ``work``."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    tc = params["train_classifier"]
    base_runs = tc["runs"]
    runs = {}
    synthetic = str(work / "synthetic")
    for name, override in VARIANTS[variant].items():
        override = {k: (synthetic if v == SYNTHETIC else v) for k, v in override.items()}
        runs[name] = {**copy.deepcopy(base_runs.get(name, {})), **override}
    if variant in SYNTHESIZE:
        params["synthesize"].update(SYNTHESIZE[variant], out_dir=synthetic,
                                    report_path=str(work / "reports" / "synthesize.json"))
    if variant in GAN:
        params["train_gan"]["runs"] = {name: {**run, "out_dir": str(work / "gan" / name),
                                              "metrics_path": str(work / "reports" / f"{name}.json"),
                                              "plots_path": str(work / "reports" / f"{name}_stats.json")}
                                       for name, run in GAN[variant].items()}
        params["synthesize"]["generators"] = generators(repo, variant, work)
    tc.update(runs=runs, seeds=seeds, out_dir=str(work / "models" / "{name}"))
    ev = params["evaluate"]
    ev.update(classifiers={n: str(work / "models" / n / "best.pt") for n in runs}, generators={},
              synthetic_dir="", fidelity_judge="", sorter="", comparisons=PAIRS[variant],
              extractor_checkpoint=str(repo / "models" / "classifier" / "real" / "best.pt"),
              reports_dir=str(work / "reports"), metrics_path=str(work / "reports" / "metrics.json"),
              cache_dir=str(work / "cache"))
    if variant in GAN:  # the generators' FD and class fidelity per class, as evaluate reports them
        ev.update(generators=generators(repo, variant, work), fidelity_judge="sorter",
                  sorter=str(repo / "models" / "classifier" / "sorter" / "best.pt"))
    return params


def generators(repo: Path, variant: str, work: Path) -> dict[str, str]:
    """Class -> generator checkpoint of a variant that trains generators: its own where it trains one for the class
    (one conditional generator serves every class), the checkout's per-class generator otherwise."""
    runs = GAN[variant]
    if len(runs) == 1 and next(iter(runs.values())).get("conditional"):
        return dict.fromkeys(CLASSES, str(work / "gan" / next(iter(runs)) / "final.pt"))
    return {c: str(work / "gan" / c / "final.pt") if c in runs else str(repo / "models" / "gan" / c / "final.pt")
            for c in CLASSES}


def run_variant(repo: Path, variant: str, work: Path, seeds: list[int], jobs: int) -> dict[str, Any]:
    params = variant_params(repo, variant, work, seeds)
    work.mkdir(parents=True, exist_ok=True)
    pfile = work / "params.yaml"
    pfile.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    def start(name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "acneops", "run", "train_classifier", "--name", name, "--params", str(pfile)]
        return subprocess.Popen(cmd, cwd=repo, env=env, stdout=open(logs / f"{name}.log", "w"),
                                stderr=subprocess.STDOUT)

    def start_gan(name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "acneops", "run", "train_gan", "--name", name, "--params", str(pfile)]
        return subprocess.Popen(cmd, cwd=repo, env=env, stdout=open(logs / f"train_gan_{name}.log", "w"),
                                stderr=subprocess.STDOUT)

    gans = {name: set() for name in GAN.get(variant, {})}
    if gans and not run_graph(gans, start_gan, jobs, cost={n: r.get("workers", 1) for n, r in GAN[variant].items()}).ok:
        sys.exit(f"{variant}: generator training failed; logs in {logs}")
    if variant in SYNTHESIZE:
        subprocess.run([sys.executable, "-m", "acneops", "run", "synthesize", "--params", str(pfile)], cwd=repo,
                       env=env, check=True, stdout=open(logs / "synthesize.log", "w"), stderr=subprocess.STDOUT)
    began = time.monotonic()
    out = run_graph({n: set() for n in params["train_classifier"]["runs"]}, start, jobs)
    train_wall = time.monotonic() - began
    if not out.ok:
        sys.exit(f"{variant}: training failed: {out.failed}; logs in {logs}")
    subprocess.run([sys.executable, "-m", "acneops", "run", "evaluate", "--params", str(pfile)], cwd=repo, env=env,
                   check=True, stdout=open(logs / "evaluate.log", "w"), stderr=subprocess.STDOUT)
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    val = {n: json.loads((work / "models" / n / "seeds" / "summary.json").read_text())
           for n in params["train_classifier"]["runs"]}
    return {"metrics": metrics, "val": val, "train_wall": train_wall, "seconds": out.seconds}


def _pm(m: dict[str, Any], key: str) -> str:
    sd = f" ± {m[key + '_sd']:.3f}" if f"{key}_sd" in m else ""
    ci = f" [{m[key + '_ci95_low']:.3f}, {m[key + '_ci95_high']:.3f}]" if f"{key}_ci95_low" in m else ""
    return f"{m[key]:.3f}{sd}{ci}"


def report(variant: str, r: dict[str, Any]) -> None:
    print(f"\n## {variant} (trainings {r['train_wall']:.0f} s wall)")
    print("| scenario | val macro-F1 (mean ± SD) | test accuracy | test macro-F1 | per seed (test acc) | s |")
    print("|---|---|---|---|---|---|")
    for name, m in r["metrics"]["classifiers"].items():
        v = r["val"][name]
        seeds = ", ".join(f"{x['accuracy']:.3f}" for x in m.get("per_seed", {}).values())
        print(f"| {name} | {v['val_macro_f1_mean']:.3f} ± {v['val_macro_f1_sd']:.3f} | {_pm(m, 'accuracy')} | "
              f"{_pm(m, 'macro_f1')} | {seeds} | {r['seconds'].get(name, 0):.0f} |")
    for gen, g in r["metrics"].get("generators", {}).items():
        fd = next((k for k in g if k.startswith("fd_") and not k.endswith("_sd")), None)
        print(f"- generator {gen}: class fidelity {g.get('class_fidelity', float('nan')):.3f}"
              + (f", {fd} {g[fd]:.4g}" if fd else ""))
    for pair, stats in r["metrics"].get("comparisons", {}).items():
        for stat, c in stats.items():
            verdict = "distinguishable" if c["distinguishable"] else "not distinguishable"
            ratio = (f", ratio {c['ratio']:.3f} [{c['ratio_ci95_low']:.3f}, {c['ratio_ci95_high']:.3f}]"
                     if "ratio" in c else "")
            print(f"- {pair} {stat}: {c['difference']:+.3f} [{c['ci95_low']:+.3f}, {c['ci95_high']:+.3f}]{ratio}; "
                  f"{verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True, help="checkout where the default pipeline has run")
    ap.add_argument("--variants", default="default,px32,scarce25,mix")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once (one thread each)")
    ap.add_argument("--work", type=Path, default=None, help="folder for outputs (default: a temporary one)")
    args = ap.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="acneops-usefulness-"))
    print(f"# usefulness: {machine()}; seeds {seeds}; repo {args.repo.resolve()}; outputs {work}")
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            sys.exit(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
        report(variant, run_variant(args.repo.resolve(), variant, work / variant, seeds, args.jobs))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
