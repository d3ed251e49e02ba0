"""switchyard.v1.Inference over gRPC (proto/switchyard/v1/inference.proto), plus health and reflection."""
