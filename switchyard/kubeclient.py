"""One way to reach the Kubernetes API, for the gateway (cluster mode) and the operator."""

from __future__ import annotations

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

# What a call to the API server raises when it is away, restarting or refuses (an ApiException: a status,
# 403 and 409 included): the failures a background loop expects, logs and retries. aiohttp's
# ServerDisconnectedError is no OSError, hence ClientError.
KUBE_FAILURES: tuple[type[BaseException], ...] = (ApiException, aiohttp.ClientError, OSError, TimeoutError)


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
