"""Generator side of `evaluate`: distribution metrics, class fidelity, anonymity audit, grids, GAN curves.

- Quality: ``n_fake`` images per generator (seeds ``seed..seed+n_fake-1``), drawn ``generation_draws`` times
  from disjoint seed ranges (figures are means over the draws, with the SD of FD and of class fidelity),
  against the real train
  images of the generator's classes, in one feature space: Fréchet distance (Heusel et al. 2017)
  named by the space (``fd_domain``; ``fid`` only with the TF-Inception weights), KID (Bińkowski et
  al. 2018), precision / recall (Kynkäänniemi et al. 2019), density / coverage (Naeem et al. 2020).
  Real-set features come from the feature cache (:mod:`acneops.features.cache`).
- Class fidelity: the judge (the severity sorter by default) labels the same images; the share
  assigned to the generator's own class is its class fidelity, the full row its fidelity-matrix row.
- Anonymity: the exported synthetic set of each class (``synthetic_dir/manifest.csv``) is audited
  against the real train images of that class, with the real test images of that class for C_T and
  the membership-inference AUC (:func:`acneops.audit.run_audit`); the whole set, where faces are real and
  detectable, against every real train person (:func:`identity_anonymity`: match rate, identity membership AUC).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from acneops.core.errors import StageError
from acneops.core.io import read_csv, read_jsonl, save_png, sha256_file, write_json

ROLE = "evaluate"
CURVE_GROUPS = (("losses", ("loss_G", "loss_D")), ("ADA", ("ada_p", "ada_rt")))  # stats.jsonl columns per panel
EXPLANATIONS = {
    "domain": ("Fréchet distance in the penultimate features of an acneops classifier trained on real images "
               "(not FID: the Inception weights cannot be downloaded offline; not comparable to published FIDs)."),
    "tiny": "Fréchet distance in the features of a fixed random network (smoke tests only; not FID).",
    "inception": "FID: Fréchet distance in TF-Inception pool3 features (pytorch-fid preprocessing).",
}


def one_blas_thread() -> Any:
    """Context: numpy's BLAS on one thread. The matrices here are small (<= a few thousand rows): on a
    shared 2-core machine one thread ran FD/KID 8x faster than two spinning ones, and the float
    summation order no longer depends on the machine's core count."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def feature_space(extractor: Any, domain_checkpoint: Path | None) -> dict[str, Any]:
    """Names and provenance of the feature space every distance in the report is measured in."""
    return {
        "name": extractor.name,
        "metric_prefix": extractor.metric_prefix,
        "kernel_prefix": extractor.kernel_prefix,
        "identity": extractor.identity,
        "checkpoint": str(domain_checkpoint) if domain_checkpoint else None,
        "explanation": EXPLANATIONS.get(extractor.name, ""),
    }


def real_labels(name: str, cfg: Any, train_labels: list[str]) -> list[str]:
    """The real classes generator ``name`` is compared with: params, else its own class, else ('all') the acne classes."""
    from acneops.classify.backbones import read_checkpoint

    if name in cfg.generator_labels:
        labels = list(cfg.generator_labels[name])
    elif name in train_labels:
        labels = [name]
    elif name == "all":
        labels = (list(read_checkpoint(cfg.sorter)["model_args"].get("labels") or []) if cfg.sorter
                  else list(train_labels))
    elif name in cfg.prior_classes:  # ingest.prior_classes: no real image of its own; compared with every real face
        labels = list(train_labels)
    else:
        raise StageError(f"params.yaml [evaluate.generators.{name}]: '{name}' is not a class of the real train split "
                         f"{train_labels}; name the generator after its class or set evaluate.generator_labels.{name}")
    unknown = [c for c in labels if c not in train_labels]
    if unknown or not labels:
        raise StageError(f"generator '{name}': classes {unknown or labels} have no real train images "
                         f"(train classes: {train_labels}); fix evaluate.generator_labels.{name}")
    return labels


def train_labels(restored_dir: Path) -> list[str]:
    """Classes present in the real train split, sorted."""
    from acneops.data.access import load_split

    return sorted({s.label for s in load_split(restored_dir, "train", role=ROLE)})


def class_fidelity(images: np.ndarray, name: str, real: list[str], judge: tuple[Any, dict, str] | None,
              batch: int) -> dict[str, Any] | None:
    """Share of ``images`` the judge assigns to each of its classes; ``own`` = the generator's class (or None).

    None when the judge does not know every class of the generator (the sorter has no 'healthy'):
    its answer would be forced onto classes the images cannot belong to.
    """
    from acneops.classify.backbones import predict

    if judge is None:
        return None
    model, args, judge_name = judge
    labels = [str(x) for x in args["labels"]]
    if not set(real) <= set(labels):
        return None
    probs = predict(model, args, images, batch=batch, desc=f"evaluate {name}: class fidelity")  # (N, C)
    top = probs.argmax(axis=1)
    shares = {c: float(np.mean(top == i)) for i, c in enumerate(labels)}
    return {"judge": judge_name, "labels": labels, "shares": shares, "own": shares.get(name),
            "mean_confidence": float(probs.max(axis=1).mean())}


def over_draws(draws: list[dict[str, Any]], fd_key: str) -> dict[str, Any]:
    """Distribution figures of several generation draws as one: floats are means over the draws, with the sample
    SD of the Fréchet distance (``<fd>_sd``) beside them; counts are those of one draw."""
    import statistics

    out = {k: (statistics.fmean(d[k] for d in draws) if isinstance(v, float) else v) for k, v in draws[0].items()}
    out["n_draws"] = len(draws)
    if len(draws) > 1 and isinstance(draws[0].get(fd_key), float):
        out[f"{fd_key}_sd"] = statistics.stdev(d[fd_key] for d in draws)
    return out


def fidelity_over_draws(name: str, fidelities: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Class fidelity of several draws: shares and confidence averaged, the own-class share's SD and each draw's."""
    import statistics

    if fidelities[0] is None:
        return None
    out = dict(fidelities[0])
    out["shares"] = {c: statistics.fmean(f["shares"][c] for f in fidelities) for c in fidelities[0]["shares"]}
    out["own"] = out["shares"].get(name)
    out["mean_confidence"] = statistics.fmean(f["mean_confidence"] for f in fidelities)
    own = [f["own"] for f in fidelities if f["own"] is not None]
    out["own_draws"] = own
    out["own_sd"] = statistics.stdev(own) if len(own) > 1 else None
    return out


def generator_quality(name: str, checkpoint: Path, cfg: Any, extractor: Any,
                      judge: tuple[Any, dict, str] | None) -> dict[str, Any]:
    """Distribution metrics and class fidelity of ``n_fake`` images of one generator; its GAN curve."""
    return {**quality_figures(name, checkpoint, cfg, extractor, judge), "curve": gan_curve(name, checkpoint, cfg)}


def quality_figures(name: str, checkpoint: Path, cfg: Any, extractor: Any,
                    judge: tuple[Any, dict, str] | None) -> dict[str, Any]:
    """Distribution metrics and class fidelity of ``generation_draws`` x ``n_fake`` images of one generator against
    the real train images of its classes, in ``extractor``'s space (`register` measures a champion with this too)."""
    from acneops.classify.data import real_items
    from acneops.features.cache import cached_stats
    from acneops.gan.sampling import generate, load_generator
    from acneops.metrics.distribution import distribution_report

    labels = real_labels(name, cfg, train_labels(Path(cfg.restored_dir)))
    real = [it.path for it in real_items(Path(cfg.restored_dir), "train", ROLE, labels)]
    if len(real) <= cfg.nearest_k:
        raise StageError(f"generator '{name}': only {len(real)} real train images of {labels}; distribution metrics "
                         f"need more than nearest_k={cfg.nearest_k}")
    G, family = load_generator(checkpoint)
    psi = cfg.psi if family == "stylegan2" else 1.0  # a DCGAN has no truncation
    label = None
    if getattr(G, "c_dim", 0):  # one class-conditional generator serves several entries, one class each
        if name not in G.labels:
            raise StageError(f"params.yaml [evaluate.generators.{name}]: {checkpoint} is a class-conditional "
                             f"generator of {list(G.labels)}; name the entry after one of its classes")
        label = name
    real_feats = cached_stats(extractor, real, cfg.cache_dir, keep_features=True, batch_size=cfg.feature_batch,
                              desc=f"evaluate {name}: features (real train {'+'.join(labels)})").features
    draws, fidelities = [], []
    for k in range(cfg.generation_draws):  # disjoint seed ranges: seed + k * n_fake ...
        first = cfg.seed + k * cfg.n_fake
        images = generate(checkpoint, range(first, first + cfg.n_fake), psi=psi, batch=cfg.batch, label=label,
                          desc=f"evaluate {name}: generate (draw {k + 1}/{cfg.generation_draws})")  # (N, H, W, 3)
        fake_feats = extractor.extract(images, batch_size=cfg.feature_batch,
                                       desc=f"evaluate {name}: features (synthetic)")
        with one_blas_thread():
            draws.append(distribution_report(real_feats, fake_feats, extractor.metric_prefix, extractor.kernel_prefix,
                                             extractor.name, cfg.kid_subsets, cfg.kid_subset_size, cfg.nearest_k,
                                             cfg.seed))
        fidelities.append(class_fidelity(images, name, labels, judge, cfg.batch))
    return {
        "checkpoint": str(checkpoint),
        "sha256": sha256_file(checkpoint),
        "family": family,
        "psi": psi,
        "seeds": [cfg.seed, cfg.seed + cfg.generation_draws * cfg.n_fake - 1],
        "real_labels": labels,
        "distribution": over_draws(draws, extractor.metric_prefix),
        "fidelity": fidelity_over_draws(name, fidelities),
    }


# ----------------------------------------------------------------------------- GAN curves


def gan_curve(name: str, checkpoint: Path, cfg: Any) -> dict[str, Any]:
    """The generator's stats.jsonl as reports/plots/gan_<name>.json (DVC plots) and gan_curves/<name>.png.

    Links are relative to reports_dir. A log that is not there is stated in the report, not an error
    (a base generator from elsewhere has none), unless evaluate.gan_logs names it explicitly.
    """
    reports = Path(cfg.reports_dir)
    log = Path(cfg.gan_logs.get(name) or Path(checkpoint).parent / "stats.jsonl")
    entry: dict[str, Any] = {"stats": str(log), "stats_link": os.path.relpath(log, reports), "png": None}
    if not log.is_file():
        entry["note"] = f"no training log at {log} (set evaluate.gan_logs.{name} to plot it)"
        return entry
    rows = read_jsonl(log)
    write_json(reports / "plots" / f"gan_{name}.json", rows)  # DVC plots read JSON, not JSONL
    entry["plot_json"] = f"plots/gan_{name}.json"
    image = _render_curves(rows, name)
    save_png(reports / "gan_curves" / f"{name}.png", image)
    entry["png"] = f"gan_curves/{name}.png"
    return entry


def _render_curves(rows: list[dict[str, Any]], name: str) -> Any:
    """PIL image of the loss and ADA columns against kimg (matplotlib Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(9, 3.2), dpi=100)
    canvas = FigureCanvasAgg(fig)
    for k, (title, columns) in enumerate(CURVE_GROUPS, start=1):
        ax = fig.add_subplot(1, len(CURVE_GROUPS), k)
        for col in columns:
            pts = [(r["kimg"], r[col]) for r in rows if col in r and "kimg" in r]
            if pts:
                ax.plot(*zip(*pts), label=col)
        ax.set(xlabel="kimg", title=f"{name}: {title}")
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    canvas.draw()
    w, h = canvas.get_width_height()
    return Image.frombuffer("RGBA", (w, h), bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1).convert("RGB")


# ----------------------------------------------------------------------------- exported set


def synthetic_by_class(synthetic_dir: Path) -> dict[str, list[Path]]:
    """Files of the exported synthetic set per class (manifest order), classes sorted; files checked."""
    from acneops.classify.data import SYNTHETIC_MANIFEST, synthetic_items

    manifest = synthetic_dir / SYNTHETIC_MANIFEST
    rows = read_csv(manifest)
    column = "label" if rows and "label" in rows[0] else "class"
    labels = sorted({r.get(column, "") for r in rows} - {""})
    if not labels:
        raise StageError(f"{manifest}: no rows with a 'label' (or 'class') value; regenerate the synthetic set")
    by_class: dict[str, list[Path]] = {c: [] for c in labels}
    for item in synthetic_items(synthetic_dir, labels):
        by_class[item.label].append(item.path)
    return by_class


def anonymity(cls: str, files: list[Path], cfg: Any, extractor: Any) -> dict[str, Any]:
    """Audit the exported images of ``cls`` against its real train images (test images for C_T and MIA)."""
    from acneops.audit import run_audit, write_audit_report
    from acneops.classify.data import real_items

    restored = Path(cfg.restored_dir)
    own = [cls] if cls not in cfg.prior_classes else train_labels(restored)  # a prior class: every real face
    train = [it.path for it in real_items(restored, "train", ROLE, own)]
    test = [it.path for it in real_items(restored, "test", ROLE, own, absent_ok=own)]
    with one_blas_thread():
        result = run_audit(files, train, cfg.audit, extractor, real_test=test, name=f"evaluate_{cls}",
                           synthetic_names=[os.path.relpath(f, cfg.synthetic_dir) for f in files],
                           real_names=[os.path.relpath(p, restored) for p in train])
    reports = Path(cfg.reports_dir)
    report = write_audit_report(result, reports / f"audit_evaluate/{cls}.json", reports / f"audit_evaluate/{cls}.png")
    n, flagged = report["counts"]["synthetic"], report["counts"]["flagged"]
    ct, ct_pix, mia = report["data_copying"], report["data_copying_pixel"], report["membership"]
    headline = {
        "n_synthetic": n, "n_real_train": len(train), "n_real_test": len(test), "flagged": flagged,
        "flagged_rate": flagged / n, "ct": ct.get("ct"), "ct_pixel": ct_pix.get("ct"),
        "mia_auc_feature": mia.get("auc_feature"), "mia_auc_pixel": mia.get("auc_pixel"),
    }
    return {"headline": headline, "ct_status": ct.get("status"), "ct_pixel_status": ct_pix.get("status"),
            "json": f"audit_evaluate/{cls}.json", "png": f"audit_evaluate/{cls}.png",
            "feature_space": report["feature_space"]}


def identity_anonymity(by_class: dict[str, list[Path]], cfg: Any) -> dict[str, Any]:
    """The identity audit of the whole exported set against every real train face (a face of any class is a
    person), per class and overall, with the real test faces for the identity membership AUC
    (:func:`acneops.audit.identity.audit_identity`); ``{"applicable": False, "reason"}`` where it does not apply."""
    from acneops.audit.identity import audit_identity
    from acneops.classify.data import real_items

    restored = Path(cfg.restored_dir)
    labels = train_labels(restored)
    train = [it.path for it in real_items(restored, "train", ROLE, labels)]
    test = [it.path for it in real_items(restored, "test", ROLE, labels)]
    files = [f for c in by_class for f in by_class[c]]
    with one_blas_thread():
        return audit_identity(files, [os.path.relpath(f, cfg.synthetic_dir) for f in files],
                              [c for c in by_class for _ in by_class[c]], train,
                              [os.path.relpath(p, restored) for p in train], test, cfg.audit, seed=cfg.seed,
                              desc="evaluate: identity")


def identity_numbers(identity: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(metrics.json ``identity``, per-class figures for the ``anonymity`` headlines) of :func:`identity_anonymity`'s
    report: numbers only, six significant digits; nothing but ``applicable: false`` where it does not apply."""
    def sig(x: Any) -> Any:
        return float(f"{x:.6g}") if isinstance(x, float) else x

    if not identity.get("applicable"):
        return {"applicable": False}, {}
    syn, mia = identity["synthetic"], identity["membership"]
    overall = {"applicable": True, "threshold": identity["threshold"], "synthetic_faces": syn["faces"],
               "no_face": syn["no_face"], "flagged": syn["flagged"], "match_rate": syn["match_rate"],
               "nearest_distance_median": (syn["nearest_distance"] or {}).get("q50"), "membership_auc": mia["auc"]}
    if mia.get("ci95"):
        overall["membership_auc_ci95_low"], overall["membership_auc_ci95_high"] = mia["ci95"]
    per_class = {c: {"identity_flagged": r["flagged"], "identity_match_rate": r["match_rate"],
                     "identity_no_face": r["no_face"]} for c, r in identity["per_class"].items()}
    return ({k: sig(v) for k, v in overall.items() if v is not None},
            {c: {k: sig(v) for k, v in r.items()} for c, r in per_class.items()})


def sample_grids(by_class: dict[str, list[Path]], cfg: Any) -> dict[str, str]:
    """reports/grids/<class>.png: the first ``grid_images`` exported images of each class; paths relative to reports."""
    from acneops.report.grid import save_grid

    out = {}
    for cls, files in by_class.items():
        chosen = files[: cfg.grid_images]
        save_grid(chosen, Path(cfg.reports_dir) / "grids" / f"{cls}.png", ncol=min(cfg.grid_ncol, len(chosen)))
        out[cls] = f"grids/{cls}.png"
    return out
