"""Switchyard: a Kubernetes-native gateway for inference on GPU workers."""

__version__ = "0.1.0"
