"""Streaming: a broker stream in, predictions out (Redis Streams embedded, Kafka for clusters)."""
