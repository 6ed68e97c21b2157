"""interest_core: the product's brain, with no I/O (no Kafka, HTTP, Prometheus or env)."""
