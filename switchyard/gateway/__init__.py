"""The gateway: HTTP in, NATS JetStream work queue out."""
