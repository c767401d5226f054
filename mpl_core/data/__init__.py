"""Data: where images come from (the built-in Fashion-MNIST, torchvision sets, own folders or zips)
and the semi-supervised split. Imports only the foundation (errors, config)."""
