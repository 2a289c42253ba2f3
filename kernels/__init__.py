"""flowaudit.kernels: pure numba compute over whole batches.

A batch is ``buf`` (uint8, the message values laid end to end) plus ``offsets`` (int64,
n+1 entries, Arrow binary layout).  Kernels never see Kafka, files or Python objects.
"""
