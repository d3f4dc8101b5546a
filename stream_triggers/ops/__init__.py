"""Operating the product: metrics, health, stats, logs and the embedded broker."""
