"""Engine: models, the training algorithms (pure steps and their registry), augmentation, sampling,
EMA, inference, checkpoints and the run state they hold, evaluation, several processes (DDP,
compile) and the training loop. Imports data and the foundation."""
