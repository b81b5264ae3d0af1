"""The `acneops` command. Argument parsing only: every command calls a stage's public function.

Heavy libraries (torch, mlflow, prefect) are imported inside the commands, so `acneops --help`
starts fast.
"""

from __future__ import annotations

import errno
import traceback
from pathlib import Path
from typing import Optional

import typer

from acneops.core.errors import AcneopsError
from acneops.core.paths import DATA_DIR

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="acneops: anonymous synthetic face datasets with measured usefulness and anonymity.",
)
data_app = typer.Typer(no_args_is_help=True, help="Create or import raw datasets (data/ layout).")
app.add_typer(data_app, name="data")
gan_app = typer.Typer(no_args_is_help=True, help="Bring pretrained GAN networks into acneops' checkpoint format.")
app.add_typer(gan_app, name="gan")

PARAMS_OPT = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read")
# `acneops run`'s exit status when a stage failed on something that may be gone when it is run again (EX_TEMPFAIL of
# sysexits.h): the tracking server unreachable, an I/O or network error. The pipeline flow retries only these; bad
# input (an AcneopsError: exit status 1) or a bug (a traceback: exit status 1) fails at once.
TRANSIENT_EXIT = 75
# errno values of an I/O or network failure, not of a missing or unreadable input (ENOENT, EACCES stay bad input)
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ESTALE, errno.ETIMEDOUT, errno.ENETDOWN,
                              errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNRESET, errno.ECONNREFUSED,
                              errno.ECONNABORTED})


def _fail(exc: BaseException | str, code: int = 1) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def transient(exc: BaseException) -> bool:
    """True when ``exc`` is a failure a retry may not meet again: it is, or was raised while handling, a broken
    connection, a timeout or an I/O error (MLflow's client, for one, raises its own exception while handling the
    ConnectionRefusedError). An AcneopsError is bad input whatever it was raised from."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and not isinstance(exc, AcneopsError):
        if isinstance(exc, (ConnectionError, TimeoutError)) or (
                isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _check_tracking() -> None:
    """Exit with TRANSIENT_EXIT, naming the URI, when the tracking server does not answer: a server that is down or
    restarting is not the stage's input (the stage would fail the same way at its first MLflow call)."""
    from acneops import tracking

    try:
        tracking.check_reachable(tracking.tracking_uri())
    except AcneopsError as exc:
        _fail(exc, code=TRANSIENT_EXIT)


@data_app.command("phantom")
def data_phantom(
    out: Path = typer.Argument(..., help="output folder (raw layout: images/ + labels.csv)"),
    task: str = typer.Option("acne", help="acne (healthy/mild/moderate/severe) or mask (mask/no_mask)"),
    params: Path = PARAMS_OPT,
) -> None:
    """Generate the built-in deterministic phantom dataset."""
    try:
        from acneops.core.config import load_params
        from acneops.data import phantom
        from acneops.stages.params import phantom_config

        cfg = phantom_config(load_params(params), task=task)
        result = phantom.generate(cfg, out)
        typer.echo(result.summary())
    except AcneopsError as exc:
        _fail(exc)


APPEND_HELP = ("add this source to the raw layout already in OUT (its files, labels.csv rows and import history are "
               "kept; the new files go to OUT/images/<source>/); without it OUT is replaced")
SOURCE_HELP = "name of this source in labels.csv (lower-case letters, digits, _ or -); unique within OUT"


@data_app.command("import-acne04")
def data_import_acne04(
    src: Path = typer.Argument(..., help="ACNE04 folder (JPEGImages/ and NNEW_*.txt)"),
    out: Path = typer.Argument(..., help="output folder (raw layout)"),
    fold: int = typer.Option(0, help="which NNEW_{trainval,test}_{fold}.txt split to import"),
    skip_bad_lines: bool = typer.Option(
        False, "--skip-bad-lines",
        help="import the other lines when some list lines are malformed; the bad lines and the images they "
             "name are left out and listed in OUT/import_report.json",
    ),
    append: bool = typer.Option(False, "--append", help=APPEND_HELP),
    source: str = typer.Option("acne04", "--source", help=SOURCE_HELP),
    params: Path = PARAMS_OPT,
) -> None:
    """Import the ACNE04 layout into the canonical raw layout (metadata stripped, pixels unchanged)."""
    try:
        from acneops.core.config import load_params
        from acneops.data import importers
        from acneops.stages.params import importers_config

        result = importers.import_acne04(src, out, fold=fold, config=importers_config(load_params(params)),
                                         skip_bad_lines=skip_bad_lines, append=append, source=source)
        typer.echo(result.summary())
    except AcneopsError as exc:
        _fail(exc)


@data_app.command("import-folders")
def data_import_folders(
    src: Path = typer.Argument(..., help="folder with one sub-folder per class"),
    out: Path = typer.Argument(..., help="output folder (raw layout)"),
    append: bool = typer.Option(False, "--append", help=APPEND_HELP),
    source: str = typer.Option("folders", "--source", help=SOURCE_HELP),
) -> None:
    """Import a folder-per-class dataset (Healthy/Mild/..., mask/no_mask); metadata stripped, pixels unchanged."""
    try:
        from acneops.data import importers

        result = importers.import_folders(src, out, append=append, source=source)
        typer.echo(result.summary())
    except AcneopsError as exc:
        _fail(exc)


@gan_app.command("import-nvlabs")
def gan_import_nvlabs(
    src: Path = typer.Argument(..., help="NVIDIA network pickle (stylegan2-ada-pytorch / stylegan3), e.g. ffhq.pkl"),
    out: Path = typer.Argument(..., help="acneops GAN checkpoint to write, e.g. models/nvlabs/ffhq.pt (resume_from)"),
    params: Optional[Path] = typer.Option(
        None, "--params", help="params.yaml whose train_gan settings the network must fit (default: ./params.yaml "
                               "when present, else no check)"),
    run: Optional[str] = typer.Option(
        None, "--run", help="train_gan run to check against (default: the runs whose resume_from is OUT, else "
                            "train_gan's common keys)"),
    no_check: bool = typer.Option(False, "--no-check", help="write the import without checking it against train_gan"),
    resolution: Optional[int] = typer.Option(None, help="expected train_gan.resolution (overrides params)"),
    z_dim: Optional[int] = typer.Option(None, help="expected train_gan.z_dim"),
    w_dim: Optional[int] = typer.Option(None, help="expected train_gan.w_dim"),
    mapping_layers: Optional[int] = typer.Option(None, help="expected train_gan.mapping_layers"),
    channel_base: Optional[int] = typer.Option(None, help="expected train_gan.channel_base"),
    channel_max: Optional[int] = typer.Option(None, help="expected train_gan.channel_max"),
    conv_clamp: Optional[float] = typer.Option(None, help="train_gan.conv_clamp to record (0 = none)"),
    mbstd_group: Optional[int] = typer.Option(None, help="train_gan.mbstd_group to record"),
) -> None:
    """Import an NVIDIA StyleGAN2 pickle as an acneops GAN checkpoint, executing nothing in the file."""
    explicit = {k: v for k, v in dict(resolution=resolution, z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers,
                                      channel_base=channel_base, channel_max=channel_max, conv_clamp=conv_clamp,
                                      mbstd_group=mbstd_group).items() if v is not None}
    try:
        from acneops.gan.nvlabs_import import import_nvlabs, train_gan_targets

        targets, expected = [], None
        if not no_check:
            path = params or (Path("params.yaml") if Path("params.yaml").is_file() else None)
            if path is None and not explicit:
                typer.echo("note: no params.yaml here and no --params: the network is not checked against train_gan")
            section = None
            if path is not None:
                from acneops.core.config import load_params

                section = load_params(path).get("train_gan") or {}
            targets, expected = train_gan_targets(section, str(path), run, out, explicit)
        typer.echo(import_nvlabs(src, out, targets, expected).summary())
    except AcneopsError as exc:
        _fail(exc)


@app.command("run")
def run_stage(
    stage: str = typer.Argument(..., help="stage module name, e.g. ingest, restore, train_gan"),
    name: Optional[str] = typer.Option(None, "--name", help="foreach item, e.g. train_gan --name all"),
    params: Path = PARAMS_OPT,
) -> None:
    """Run one pipeline stage (this is what every dvc.yaml stage calls).

    Exit status: 0 done; 1 bad input (the message says what to fix) or a bug (its traceback); 75 a transient
    failure worth a retry (tracking server unreachable, an I/O or network error)."""
    _check_tracking()
    try:
        from acneops.stages import run_stage as _run_stage

        result = _run_stage(stage, name, params)
        typer.echo(result.summary() if hasattr(result, "summary") else str(result))
    except AcneopsError as exc:
        _fail(exc)
    except Exception as exc:
        if not transient(exc):
            raise  # a bug: its traceback, exit status 1
        traceback.print_exc()
        _fail(f"{exc!r}: a transient failure (exit status {TRANSIENT_EXIT}), worth a retry", code=TRANSIENT_EXIT)


@app.command("repro")
def repro(
    params: Path = PARAMS_OPT,
    jobs: int = typer.Option(
        0, "--jobs", "-j", min=0,
        help="stages run at once, each as `dvc repro --single-item <stage>` once its upstream stages are done "
             "(0 = one per CPU core; 1 = plain `dvc repro`, sequential). A stage's thread count comes from "
             "params.yaml, never from this, so results do not depend on it.",
    ),
    dvc_args: Optional[list[str]] = typer.Argument(
        None, help="targets (train_gan, train_gan@mild, ...; default: every stage) and, after `--`, `dvc repro` "
                   "options such as --force or --no-run-cache"),
) -> None:
    """The main job: create the phantom dataset if data/ is absent, then reproduce every stage with DVC.

    Independent stages (the per-class GAN fine-tunes, the classifiers) run side by side, up to --jobs at a time.
    The reproduction is one MLflow run (stage ``repro``: git commit, arguments, jobs, exit status; FAILED when a
    stage fails) and every stage's run is nested under it (ACNEOPS_PARENT_RUN_ID). See acneops.pipeline.repro."""
    try:
        from acneops.core.config import load_params
        from acneops.data import phantom
        from acneops.pipeline.repro import reproduce
        from acneops.stages.params import phantom_config

        if not DATA_DIR.exists():
            cfg = phantom_config(load_params(params), task="acne")
            typer.echo(phantom.generate(cfg, DATA_DIR).summary())
        raise typer.Exit(code=reproduce(list(dvc_args or []), params, jobs))
    except AcneopsError as exc:
        _fail(exc)


if __name__ == "__main__":
    app()
