"""The trained backbone as an MLflow pyfunc model, "models from code": MLflow copies this file into
each logged model (tracking.log_backbone) and runs it at load time, so nothing is unpickled.

    model = mlflow.pyfunc.load_model("models:/<model id>")
    embeddings = model.predict(frames)   # uint8 (N, H, W, 3), H, W multiples of 16 -> float32 (N, D)

The embeddings are what the probes read: the mean of the frozen patch tokens.
"""
from __future__ import annotations

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class BackboneModel(PythonModel):
    def load_context(self, context):
        from sportray import backbones   # torch and timm: only when a model is loaded

        self.backbone = backbones.load_checkpoint(context.artifacts["backbone"])[0].eval()

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from sportray import probes

        return probes.extract_features(self.backbone, np.asarray(model_input, dtype=np.uint8), "cpu",
                                       pool=True).numpy()


set_model(BackboneModel())
