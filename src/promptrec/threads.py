"""How many threads the numeric libraries use where many requests or actors run side by side."""

from __future__ import annotations

import os


def one_thread_per_request() -> None:
    """Concurrency across requests, not threads inside one: BLAS threads of concurrent
    requests fight over the cores (with OpenBLAS's default of one thread per core, 8
    concurrent clients got 91 requests/s instead of 513: known users, amazon-beauty, 2 cores);
    an HNSW search is one thread too (building one still uses every core)."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    faiss.omp_set_num_threads(1)
    if "PROMPTREC_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
