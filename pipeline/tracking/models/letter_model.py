"""The model-from-code file MLflow keeps with each logged model: loading the model runs it.

(MLflow's recommended form, rather than a pickled object; the package's code travels with
the model, so the import below works wherever the model is loaded.)
"""

from mlflow.models import set_model

from pipeline.tracking.models.classifier import LetterClassifier

set_model(LetterClassifier())
