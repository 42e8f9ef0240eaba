"""GPU kernels (CuPy RawModule over ``*.cu`` sources) and their CPU oracles with the same signatures."""
