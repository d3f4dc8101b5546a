"""The stream worker: poll loop, partition stores, changelog restore, topics."""
