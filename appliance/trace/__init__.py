"""Requirements traceability: the register, the risk file and the trace matrix."""
