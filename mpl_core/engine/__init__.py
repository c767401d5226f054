"""Engine: models, the training algorithms (pure steps), augmentation, sampling, EMA, inference,
checkpoints, several processes and the training loop. Imports data and the foundation."""
