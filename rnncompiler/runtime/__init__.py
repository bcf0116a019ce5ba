"""The runtime: `Kernel` calls a compiled module on numpy arrays (argument checks,
buffers, threads over the batch, checkpointed BPTT, finiteness checks). It imports
neither sympy nor networkx, nor any stage of the compiler."""
