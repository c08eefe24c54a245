"""faiss on the very vectors and queries `cargo bench --bench index` measured.

Run by the bench with `--peer faiss` (through `cargo xtask bench index --peer
faiss`, which installs faiss-cpu into .venv-faiss once). It reads from DIR:
items.npy (n x d float32), queries.npy (q x d float32), truth.npy (q x k int64:
the exact top k of every query, -1 padded when fewer are eligible) and
excludes.npy (q x e int64, -1 padded: items a query must not return), and
prints one JSON line per index with build seconds, recall@k against truth,
queries per second on one thread and on every thread, and one-thread p50/p99
latency. Indexes are given as `--hnsw M,EF_CONSTRUCTION,EF_SEARCH` and
`--ivf N_LISTS,N_PROBE`, all by inner product (faiss's METRIC_INNER_PRODUCT);
several search values separated by "/" (`--hnsw 16,128,100/200/400`) are
measured on one build, whose build time the first row carries.

q/s are measured as faiss is used in practice: one batched `search` call
(faiss parallelises over queries with OpenMP); latency with one call per query
on one thread, which includes Python's call overhead (a few microseconds).
"""

import argparse
import json
import os
import time

import faiss
import numpy as np


def recall(found, truth, excludes):
    total = 0.0
    for row, exact, ex in zip(found, truth, excludes):
        exact = exact[exact >= 0]
        if len(exact) == 0:
            total += 1.0
            continue
        banned = set(ex[ex >= 0].tolist())
        kept = [i for i in row.tolist() if i >= 0 and i not in banned][: len(exact)]
        total += len(set(kept) & set(exact.tolist())) / len(exact)
    return total / max(len(truth), 1)


def measure(label, index, queries, truth, excludes, k, threads):
    fetch = k + int((excludes >= 0).sum(axis=1).max(initial=0))
    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    _, found = index.search(queries, fetch)
    qps_1 = len(queries) / (time.perf_counter() - t)
    latencies = []
    for q in queries[: min(len(queries), 1000)]:
        t = time.perf_counter()
        index.search(q[None, :], fetch)
        latencies.append(time.perf_counter() - t)
    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    index.search(queries, fetch)
    qps_n = len(queries) / (time.perf_counter() - t)
    latencies.sort()
    pick = lambda p: latencies[min(int(len(latencies) * p), len(latencies) - 1)] * 1e3
    return {
        "index": label,
        "recall": recall(found, truth, excludes),
        "qps_1": qps_1,
        "qps_n": qps_n,
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--hnsw", action="append", default=[], help="M,EF_CONSTRUCTION,EF_SEARCH[/EF_SEARCH...]")
    ap.add_argument("--ivf", action="append", default=[], help="N_LISTS,N_PROBE[/N_PROBE...]")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    items = np.ascontiguousarray(np.load(os.path.join(a.dir, "items.npy")), dtype=np.float32)
    queries = np.ascontiguousarray(np.load(os.path.join(a.dir, "queries.npy")), dtype=np.float32)
    truth = np.load(os.path.join(a.dir, "truth.npy"))
    excludes = np.load(os.path.join(a.dir, "excludes.npy"))
    k = truth.shape[1]
    n, d = items.shape
    for spec in a.hnsw:
        m, ef_construction, ef_searches = spec.split(",")
        m, ef_construction = int(m), int(ef_construction)
        faiss.omp_set_num_threads(a.threads)
        t = time.perf_counter()
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(items)
        build_s = time.perf_counter() - t
        for i, ef_search in enumerate(int(x) for x in ef_searches.split("/")):
            index.hnsw.efSearch = ef_search
            row = measure(f"faiss IndexHNSWFlat M={m} efC={ef_construction} efS={ef_search}",
                          index, queries, truth, excludes, k, a.threads)
            print(json.dumps({**row, "build_s": build_s if i == 0 else None}), flush=True)
    for spec in a.ivf:
        n_lists, n_probes = spec.split(",")
        n_lists = int(n_lists)
        faiss.omp_set_num_threads(a.threads)
        t = time.perf_counter()
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, n_lists, faiss.METRIC_INNER_PRODUCT)
        index.train(items)
        index.add(items)
        build_s = time.perf_counter() - t
        for i, n_probe in enumerate(int(x) for x in n_probes.split("/")):
            index.nprobe = n_probe
            row = measure(f"faiss IndexIVFFlat nlist={n_lists} nprobe={n_probe}",
                          index, queries, truth, excludes, k, a.threads)
            print(json.dumps({**row, "build_s": build_s if i == 0 else None}), flush=True)


if __name__ == "__main__":
    main()
