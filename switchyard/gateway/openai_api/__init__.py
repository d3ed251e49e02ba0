"""The OpenAI-compatible HTTP API: OpenAI's request and response shapes over the inference core.

Every request goes through `submit.py` like a native one (same lanes, pools, holds, jobs);
only the shapes differ. One concept per module:

- bodies.py: the request bodies (pydantic), how each maps onto a work item's items and params;
- results.py: a worker's result items as OpenAI's response objects;
- errors.py: ApiError in OpenAI's error shape;
- routes.py: the endpoints (POST /v1/chat/completions, /v1/completions, /v1/embeddings,
  /v1/images/generations, /v1/audio/speech);
- discovery.py: GET /v1/models, /v1/metadata, / and /status.
"""
