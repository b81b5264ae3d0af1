"""Running the DVC pipeline: the stage graph as DVC sees it (dag), a small process scheduler over any dependency
graph (schedule), and `acneops repro` itself (repro: independent stages side by side inside one parent MLflow run).

Above the domain packages and beside acneops.stages: it knows DVC and MLflow (acneops.tracking), never a stage's
code. Imported only by the CLI's `repro` command, so no stage's import closure (its dvc.yaml deps) contains it.
"""
