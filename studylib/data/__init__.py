"""data: images, the prepared cache, loaders, the dataset registry, splits, leakage checks, synthetic data,
downloads (imports core)."""
