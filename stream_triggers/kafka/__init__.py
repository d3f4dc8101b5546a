"""Kafka plumbing shared by every reader and writer: topics, partitioning, clients."""
