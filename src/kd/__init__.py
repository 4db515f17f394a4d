"""kd: knowledge distillation for text classification."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Classifier":  # imported on first use: `import kd` stays light
        from kd.deployment.classifier import Classifier
        return Classifier
    raise AttributeError(f"module 'kd' has no attribute {name!r}")
