"""Gateway manifests with a spec.policy, for the policy tests (the test manifests' Upstreams and keys, plus more)."""

from __future__ import annotations

from pathlib import Path

from dataplane import copy_manifests

KEYS = {  # name: (secret, tier)
    "admin": ("admin-key-0123456789abcdef", "default"),
    "other": ("other-key-0123456789abcdef", "default"),
    "slowpoke": ("slowpoke-key-0123456789abc", "conc"),
    "tokens": ("tokens-key-0123456789abcdef", "tok"),
    "quota": ("quota-key-0123456789abcdef", "quota"),
    "ip-a": ("ip-a-key-0123456789abcdef", "ipt"),
    "ip-b": ("ip-b-key-0123456789abcdef", "ipt"),
}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name][0]}"}


def policy_config(dest: Path, stages: str) -> Path:
    """The test manifests with this Gateway: the keys above and `stages` (YAML, indented 6) as spec.policy."""
    config = copy_manifests(dest)
    keys = "\n".join(f"      - {{name: {n}, secretRef: {{name: keys, key: {n}}}, tier: {tier}"
                     + (", admin: true}" if n == "admin" else "}") for n, (_, tier) in KEYS.items())
    secrets = "\n".join(f"  {n}: {secret}" for n, (secret, _) in KEYS.items())
    (config / "gateway.yaml").write_text(f"""apiVersion: switchyard.dev/v1alpha1
kind: Gateway
metadata: {{name: test}}
spec:
  auth:
    apiKeys:
{keys}
  maxRequestBodyBytes: 4096
  policy:
    stages:
{stages}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData:
{secrets}
---
apiVersion: switchyard.dev/v1alpha1
kind: Pool
metadata: {{name: tenant}}
spec: {{gpus: {{cpu: 1}}, ttlSeconds: 600}}
""")
    return config
