"""One way to reach the Kubernetes API, for the gateway (cluster mode) and the operator."""

from __future__ import annotations

from kubernetes_asyncio import client, config


async def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """From `kubeconfig`, else the pod's service account, else ~/.kube/config.

    The configuration is the client's own, not the library's global default, so two
    components in one process (as in tests) cannot overwrite each other's.
    """
    cfg = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            await config.load_kube_config(client_configuration=cfg)
    return client.ApiClient(configuration=cfg)
