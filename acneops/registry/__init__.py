"""The MLflow model registry side of acneops (issue 13): every trained generator and classifier as an MLflow pyfunc
model (:mod:`acneops.registry.pyfunc`, logged by its training stage through :mod:`acneops.registry.models`), and
the gated `register` stage's measurements, decisions and model cards (:mod:`acneops.registry.gates`,
:mod:`acneops.registry.card`). mlflow is imported inside the functions."""
