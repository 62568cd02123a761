# Necks register in mmssm.registry.MODELS on import.
