# Each family module registers its backbone in mmssm.registry.MODELS on import.
