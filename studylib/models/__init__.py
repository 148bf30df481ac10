"""models: backbones, their weights and block maps (imports core)."""
