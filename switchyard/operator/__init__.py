"""The operator: Gateway/Upstream/Pool/Planner -> ConfigMaps, Leases, ScaledObjects, Deployments."""
