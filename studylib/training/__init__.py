"""training: strategies, the engine, per-layer logs, cached features, metrics, one run and its folder
(imports core, data, models)."""
