"""reports/report.md: the page a person reads first, rendered from what `evaluate` measured.

Pure text: every function takes the metrics (``metrics.json``'s nested dict) and the details
(``evaluation.json``) and returns Markdown; nothing here measures or reads images. Images are
embedded with paths relative to the reports folder, so the page renders on GitHub, in VS Code and
in the MLflow artifact view alike. Wording follows the numbers' real meaning: a Fréchet distance in
a classifier's feature space is ``fd_domain``, never FID.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

SCENARIO_ORDER = ("synthetic", "real", "augmented")  # TSTR first, then the second method's scenarios


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number formatted with ``spec``; None/missing as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return format(value, spec)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table (cells converted with str; '|' escaped)."""
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ordered(names: Sequence[str]) -> list[str]:
    known = [s for s in SCENARIO_ORDER if s in names]
    return known + [s for s in names if s not in known]


def scenario_table(classifiers: dict[str, dict[str, Any]], trained_on: dict[str, str] | None = None) -> str:
    """Scenarios side by side on the real test split (metrics.json ``classifiers``), chance level per row.

    Sensitivity / specificity columns appear when any classifier is binary.
    """
    trained_on = trained_on or {}
    binary = any("sensitivity" in m for m in classifiers.values())
    header = ["scenario", "trained on", "seeds", "accuracy", "macro-F1", "macro precision", "macro recall"]
    header += ["sensitivity", "specificity"] if binary else []
    header += ["chance acc. (uniform / majority)", "test images"]
    rows = []
    for name in _ordered(list(classifiers)):
        m = classifiers[name]
        row = [f"**{name}**", trained_on.get(name, "–"), fmt(m.get("n_seeds"), "d"),
               _with_ci(m, "accuracy"), _with_ci(m, "macro_f1"),
               fmt(m.get("macro_precision")), fmt(m.get("macro_recall"))]
        row += [fmt(m.get("sensitivity")), fmt(m.get("specificity"))] if binary else []
        row += [f"{fmt(m.get('chance_uniform'))} / {fmt(m.get('chance_majority'))}", fmt(m.get("n_test"), "d")]
        rows.append(row)
    return md_table(header, rows)


def _with_ci(m: dict[str, Any], key: str) -> str:
    """``0.752 ± 0.021 [0.678, 0.826]``: the figure (a mean over seeds when there are several), the SD between seeds
    when metrics.json has one, and the 95% interval over test images when it has that."""
    low, high, sd = m.get(f"{key}_ci95_low"), m.get(f"{key}_ci95_high"), m.get(f"{key}_sd")
    return (fmt(m.get(key)) + (f" ± {fmt(sd)}" if sd is not None else "")
            + (f" [{fmt(low)}, {fmt(high)}]" if low is not None and high is not None else ""))


def comparison_table(comparisons: dict[str, dict[str, Any]]) -> str:
    """Paired differences between scenarios (metrics.json ``comparisons``) with their 95% intervals and what can
    be read from them."""
    rows = []
    for pair, stats in comparisons.items():
        a, b = pair.split("_minus_")
        for stat, v in stats.items():
            verdict = (("higher" if v["difference"] > 0 else "lower") + " beyond noise" if v["distinguishable"]
                       else "not distinguishable (the interval contains 0)")
            ratio = (f"{fmt(v['ratio'])} [{fmt(v['ratio_ci95_low'])}, {fmt(v['ratio_ci95_high'])}]"
                     if "ratio" in v else "–")
            rows.append([f"`{a}` − `{b}`", stat.replace("_", "-"), f"{v['difference']:+.3f}",
                         f"[{v['ci95_low']:+.3f}, {v['ci95_high']:+.3f}]", ratio, verdict])
    return md_table(["comparison", "figure", "difference", "95% interval", "ratio a / b [95%]", "reading"], rows)


def per_class_table(classifiers: dict[str, dict[str, Any]], key: str = "f1") -> str:
    """Per-class ``key`` (f1, recall, precision, specificity) of every scenario: scenario rows, class columns."""
    columns: list[str] = []
    for m in classifiers.values():
        columns += [c for c in m.get("per_class", {}) if c not in columns]
    rows = [[f"**{name}**"] + [fmt(classifiers[name].get("per_class", {}).get(c, {}).get(key)) for c in columns]
            for name in _ordered(list(classifiers))]
    return md_table([f"{key} per class"] + columns, rows)


def generator_table(generators: dict[str, dict[str, Any]], feature: dict[str, Any],
                    real_labels: dict[str, list[str]] | None = None) -> str:
    """Per-generator quality (metrics.json ``generators``), FD and KD named by the feature space."""
    fd, kd, space = feature["metric_prefix"], feature["kernel_prefix"], feature["name"]
    real_labels = real_labels or {}
    header = ["generator", "real classes", fd, f"{kd} (mean ± std)", "precision", "recall", "density",
              "coverage", "class fidelity", "n real / fake"]
    rows = []
    for name, m in generators.items():
        rows.append([
            f"**{name}**", ", ".join(real_labels.get(name, [])) or "–", _pm(m, fd, ".4g"),
            f"{fmt(m.get(f'{kd}_mean'), '.4g')} ± {fmt(m.get(f'{kd}_std'), '.2g')}",
            fmt(m.get(f"precision_{space}")), fmt(m.get(f"recall_{space}")), fmt(m.get(f"density_{space}")),
            fmt(m.get(f"coverage_{space}")), _pm(m, "class_fidelity", ".3f"),
            f"{fmt(m.get('n_real'), 'd')} / {fmt(m.get('n_fake'), 'd')}",
        ])
    return md_table(header, rows)


def _pm(m: dict[str, Any], key: str, spec: str) -> str:
    """``m[key]`` with `` ± m[key_sd]`` (the SD over generation draws) when metrics.json has it."""
    sd = m.get(f"{key}_sd")
    return fmt(m.get(key), spec) + (f" ± {fmt(sd, '.2g')}" if sd is not None else "")


def fidelity_table(fidelity: dict[str, dict[str, float]]) -> str:
    """Fidelity matrix: generator rows, judged-class columns (shares); the own-class cell in bold."""
    columns: list[str] = []
    for shares in fidelity.values():
        columns += [c for c in shares if c not in columns]
    rows = [[f"**{g}**"] + [f"**{fmt(s.get(c))}**" if c == g else fmt(s.get(c)) for c in columns]
            for g, s in fidelity.items()]
    return md_table(["generator \\ assigned to"] + columns, rows)


def anonymity_table(anonymity: dict[str, dict[str, Any]], files: dict[str, dict[str, Any]] | None = None) -> str:
    """Anonymity audit per class (metrics.json ``anonymity``) with links to the full audit files."""
    files = files or {}
    header = ["class", "synthetic", "flagged", "flagged rate", "C_T (features)", "C_T (pixels)",
              "MIA AUC (features)", "MIA AUC (pixels)", "details"]
    rows = []
    for cls, a in anonymity.items():
        f = files.get(cls, {})
        link = f"[json]({f['json']}), [pairs]({f['png']})" if f.get("json") else "–"
        rows.append([f"**{cls}**", fmt(a.get("n_synthetic"), "d"), fmt(a.get("flagged"), "d"),
                     fmt(a.get("flagged_rate")), fmt(a.get("ct"), ".2f"), fmt(a.get("ct_pixel"), ".2f"),
                     fmt(a.get("mia_auc_feature")), fmt(a.get("mia_auc_pixel")), link])
    return md_table(header, rows)


# ----------------------------------------------------------------------------- sections


def _what_was_run(details: dict[str, Any]) -> list[str]:
    import yaml

    prov = details.get("provenance", {})
    cfg = prov.get("config", {})
    feature = details.get("feature", {})
    lines = ["## What was run", "",
             f"- git commit: `{prov.get('git_commit', 'unknown')}`",
             f"- raw data (`data.dvc` md5): `{prov.get('data_dvc_md5', 'unknown')}`",
             f"- feature space: `{feature.get('name')}` ({feature.get('identity')})",
             f"- generated images per generator: {cfg.get('generation_draws', 1)} draw(s) of {cfg.get('n_fake')} "
             f"from disjoint seed ranges starting at {cfg.get('seed')} (generator figures: mean over the draws "
             "± their SD), "
             f"truncation psi {cfg.get('psi')} (stylegan2 only)",
             "- every real-image number below is on the frozen real **test** split, read only by this stage", "",
             "Checkpoints:", ""]
    rows = [[f"classifier `{s}`", e["checkpoint"], e["sha256"][:12]] for s, e in details.get("classifiers", {}).items()]
    if details.get("sorter"):
        rows.append(["sorter", details["sorter"]["checkpoint"], details["sorter"]["sha256"][:12]])
    rows += [[f"generator `{g}`", e["checkpoint"], e["sha256"][:12]] for g, e in details.get("generators", {}).items()]
    params = yaml.safe_dump({"evaluate": {k: v for k, v in cfg.items() if k != "audit"}, "audit": cfg.get("audit", {})},
                            sort_keys=True, default_flow_style=None, width=110)
    return lines + [md_table(["what", "file", "sha256"], rows), "",
                    "<details><summary>params (evaluate, audit)</summary>", "", "```yaml", params.rstrip(), "```",
                    "", "</details>", ""]


def _classifier_section(details: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    cls = metrics.get("classifiers", {})
    if not cls:
        return ["## Classifiers on the real test split", "", "No classifier was configured (evaluate.classifiers).", ""]
    trained = {s: e["trained_on"] for s, e in details["classifiers"].items()}
    first = next(iter(details["classifiers"].values()))
    k, chance = len(first["report"]["labels"]), first["chance"]
    lines = ["## Classifiers on the real test split", "",
             "Train-synthetic-test-real (TSTR: `synthetic`) against real-only and real + synthetic training, "
             "all scored on the same real test images.", "", scenario_table(cls, trained), "",
             f"Chance level: guessing uniformly among the {k} classes gives accuracy {fmt(chance['uniform'])}; "
             f"always answering the majority class (`{chance['majority_class']}`) gives {fmt(chance['majority'])}.",
             "", per_class_table(cls, "f1"), ""]
    left_out = {c: why for e in details["classifiers"].values() for c, why in e["report"].get("left_out", {}).items()}
    if left_out:
        lines += ["Per-class figures and macro averages cover only the classes present in the real test split; left "
                  "out: " + "; ".join(f"`{c}` ({why})" for c, why in left_out.items()) + ".", ""]
    intervals = details.get("intervals")
    if intervals:
        lines += ["Figures are means over the training seeds of each scenario (`seeds` column; "
                  "`train_classifier.seeds`), ± the standard deviation between seeds: the spread of training itself. "
                  f"Brackets: 95% percentile bootstrap intervals over the test images ({intervals['n']} resamples, "
                  f"seed {intervals['seed']}) of that seed mean: how far it could move with another draw of as many "
                  "test images. Per-class figures are seed means too; confusion matrices are those of the shipped "
                  "model (the first seed).", ""]
    if metrics.get("comparisons"):
        lines += ["Scenarios compared on the same resampled test images (paired):", "",
                  comparison_table(metrics["comparisons"]), ""]
    positives = {e["report"].get("positive") for e in details["classifiers"].values()} - {None}
    if positives:
        lines.append(f"Sensitivity / specificity are those of the positive class `{', '.join(sorted(positives))}`.")
    if details.get("sorter"):
        s, m = details["sorter"], metrics["sorter"]
        lines += ["", f"**Severity sorter** (classes {', '.join(s['report']['labels'])}): accuracy "
                      f"{_with_ci(m, 'accuracy')}, macro-F1 {_with_ci(m, 'macro_f1')} on {m['n_test']} real test "
                      "images "
                      f"(chance {fmt(m['chance_uniform'])} uniform, {fmt(m['chance_majority'])} majority)."]
    return lines + [""]


def _generator_section(details: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    gens = metrics.get("generators", {})
    if not gens:
        return []
    feature = details["feature"]
    labels = {g: e["real_labels"] for g, e in details["generators"].items()}
    lines = ["## Generators: quality against the real train images of their classes", "",
             generator_table(gens, feature, labels), "",
             f"`{feature['metric_prefix']}`: {feature['explanation']} Lower is better; precision ≈ fidelity, "
             "recall ≈ diversity (k-NN manifolds); density/coverage after Naeem et al. 2020.", ""]
    fid = metrics.get("class_fidelity")
    if fid:
        judge = next(e["fidelity"] for e in details["generators"].values() if e.get("fidelity"))
        lines += ["### Class fidelity", "",
                  f"Share of each generator's {details['provenance']['config'].get('n_fake')} images that the "
                  f"`{judge['judge']}` classifier assigns to each class (chance {fmt(1 / len(judge['labels']))}); "
                  "a per-class generator should land mostly on its own class (bold).", "", fidelity_table(fid), ""]
        summary = metrics.get("class_fidelity_summary")
        if summary:
            lines += [f"Own class is the most frequent assignment for {summary['own_is_top']} of "
                      f"{summary['generators']} per-class generators; mean own-class share "
                      f"{fmt(summary['mean_own'])}.", ""]
    return lines


def _anonymity_section(details: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    anon = metrics.get("anonymity", {})
    if not details.get("anonymity"):
        return ["## Anonymity of the exported synthetic set", "", "No exported synthetic set was configured "
                "(evaluate.synthetic_dir is empty): nothing was audited.", ""]
    lines = ["## Anonymity of the exported synthetic set", "", anonymity_table(anon, details["anonymity"]), "",
             "Flagged: near copies of a real train image (authenticity rule in feature space and pixel "
             "nearest-neighbour tests, mirrored and cropped views included). C_T (Meehan et al. 2020): about 0 "
             "for a generator that samples the distribution, strongly negative for one that copies. Membership "
             "AUC: train vs test images by distance to the synthetic set; 0.5 means no membership leak."]
    notes = [f"`{c}`: C_T {a['ct_status']}" for c, a in details["anonymity"].items()
             if a["headline"].get("ct") is None and a.get("ct_status")]
    return lines + ([""] + [f"- {n}" for n in notes] if notes else []) + [""]


def _identity_section(details: dict[str, Any]) -> list[str]:
    """The identity audit (acneops.audit.identity) in words: its figures, or why it does not apply."""
    ident = details.get("identity")
    lines = ["### Identity (dlib face recognition)", ""]
    if not ident:
        return []
    if not ident.get("applicable"):
        return lines + [f"Not applicable: {ident.get('reason', 'no reason recorded')}. No identity figure is given.",
                        ""]
    cal, syn, mia = ident["calibration"], ident["synthetic"], ident["membership"]
    same = (cal.get("same_pairs") or {}).get("quantiles") or {}
    diff = cal["different_pairs"]
    near = syn.get("nearest_distance") or {}
    ci = f" (95% interval {fmt(mia['ci95'][0])}–{fmt(mia['ci95'][1])})" if mia.get("ci95") else ""
    how = cal.get("rule", "set in params.yaml") if cal["source"] == "calibrated" else cal["source"]
    return lines + [
        f"- threshold {fmt(ident['threshold'])} ({how}); dlib's own same-person threshold is "
        f"{fmt(cal['dlib_same_person'], '.1f')}",
        f"- calibration: transformed copies of a real face at median {fmt(same.get('q50'))}, q99 "
        f"{fmt(same.get('q99'))}; nearest other real face at q5 {fmt(diff['quantiles']['q5'])}, median "
        f"{fmt(diff['quantiles']['q50'])} ({fmt(100 * diff['share_below_threshold'], '.1f')}% under the threshold)",
        f"- {syn['flagged']} of {syn['faces']} synthetic faces are a real train person (match rate "
        f"{fmt(syn['match_rate'])}); {syn['no_face']} of {syn['images']} images have no face dlib finds (kept); "
        f"nearest real identity at median {fmt(near.get('q50'))}, q5 {fmt(near.get('q5'))}",
        f"- identity membership AUC (real train vs test faces, by distance to the nearest synthetic face): "
        f"{fmt(mia.get('auc'))}{ci}; 0.5 means no identity leak" + (f" ({mia['status']})" if mia.get("status") else ""),
        ""]


def _images_section(details: dict[str, Any], reports_dir: Path) -> list[str]:
    lines = ["## Sample grids of the exported synthetic set", ""]
    grids = details.get("grids") or {}
    for cls, rel in grids.items():
        if (reports_dir / rel).is_file():
            lines += [f"### {cls}", "", f"![{cls} synthetic samples]({rel})", ""]
    if not grids:
        lines += ["No exported synthetic set was configured.", ""]
    lines += ["## Confusion matrices (real test split)", ""]
    entries = dict(details.get("classifiers", {}))
    if details.get("sorter"):
        entries["sorter"] = details["sorter"]
    for name, e in entries.items():
        if (reports_dir / e["confusion_png"]).is_file():
            lines += [f"### {name}", "", f"![confusion matrix of {name}]({e['confusion_png']})", ""]
    lines += ["## GAN training curves", ""]
    missing = []
    for name, g in details.get("generators", {}).items():
        curve = g["curve"]
        if curve.get("png") and (reports_dir / curve["png"]).is_file():
            lines += [f"### {name}", "", f"![training curves of {name}]({curve['png']})", "",
                      f"Data: [stats.jsonl]({curve['stats_link']}) (one line per tick).", ""]
        else:
            missing.append(f"- {name}: {curve.get('note', 'no curve')}")
    return lines + missing + [""]


def render_report(details: dict[str, Any], metrics: dict[str, Any], reports_dir: str | Path) -> str:
    """The whole report.md; images are embedded only if their files exist under ``reports_dir``."""
    reports_dir = Path(reports_dir)
    metrics_rel = os.path.relpath(details.get("provenance", {}).get("config", {}).get("metrics_path", "metrics.json"),
                                  reports_dir)
    lines = ["# acneops evaluation report", "",
             f"Numbers: [`{metrics_rel}`]({metrics_rel}) (DVC metrics) and [`evaluation.json`](evaluation.json) "
             "(with labels, checkpoints and provenance).", ""]
    lines += _what_was_run(details)
    lines += _classifier_section(details, metrics)
    lines += _generator_section(details, metrics)
    lines += _anonymity_section(details, metrics)
    lines += _identity_section(details)
    lines += _images_section(details, reports_dir)
    return "\n".join(lines).rstrip() + "\n"
