"""Measures (`mode = "measure"`): the benchmark against PyTorch, the sweep at scale, the
ImageNet-shape rehearsal and the roofline projection; run.py is their one writer."""
