"""Test helpers for Switchyard (real Kubernetes control plane for tests)."""
