"""Generated from KEDA's externalscaler.proto (see tests/unit/test_externalscaler_stubs.py)."""
