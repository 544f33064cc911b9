"""The input pipeline (TFDS splits, per-host slices, batches) and the dataset builders:
Fashion-MNIST from Debian's files and the scenes built from it."""
