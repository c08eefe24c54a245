"""A SASRec reference in plain PyTorch, on funnel's next-watch protocol.

Written for funnel (issue 22) to answer one question: what does a standard
self-attentive sequential recommender reach on exactly the split funnel
evaluates on (ml-1m ratings >= 4, users with >= 5 positives, leave last out by
time with ties in file order, full-catalog ranking with the history excluded)?
It is not part of funnel and nothing in funnel runs it; reports/models.md says
what it measured and how it was run.

The model is Kang & McAuley's (2018): item embeddings scaled by sqrt(d) plus
learned positions, `layers` pre-norm blocks of causal multi-head attention and
a ReLU feed-forward network with residuals and dropout, a final layer norm,
and logits against the same item table. Two ways to feed it:
  --windows last   SASRec's own: each user's last max_len+1 training items,
                   right-aligned, one sequence a user, every position a target;
  --windows cover  funnel's `targets = "all_positions"`: every training target
                   once, in windows cut from the most recent back.
Losses: `full` is the softmax over the whole catalog (SASRec with cross-entropy,
Klenitskiy & Vasilev 2023; Petrov & Macdonald 2023); `bce` is the original's
one sampled negative per position.

Run with the peer's venv (../shared/peer/README.md):
  P=~/.cache/funnel-peer-venv/bin/python
  $P scripts/reference/torch_sasrec.py --data ../shared/data/ml-1m/ratings.dat --json out.json
"""
import argparse, json, math, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load(path, min_rating, min_len):
    rows = []
    with open(path, encoding="latin-1") as f:
        if path.endswith("ratings.dat"):
            for line in f:
                u, i, r, t = line.rstrip("\n").split("::")
                rows.append((int(u), int(i), float(r), int(t)))
        else:  # u.data: tab separated
            for line in f:
                u, i, r, t = line.rstrip().split("\t")[:4]
                rows.append((int(u), int(i), float(r), int(t)))
    rows = [r for r in rows if r[2] >= min_rating]
    rows.sort(key=lambda r: (r[0], r[3]))  # stable: ties keep file order, as funnel
    seqs = {}
    for u, i, _, _ in rows:
        seqs.setdefault(u, []).append(i)
    seqs = {u: s for u, s in seqs.items() if len(s) >= min_len}
    items = sorted({i for s in seqs.values() for i in s})
    idx = {it: k + 1 for k, it in enumerate(items)}  # 0 is padding
    return {u: [idx[i] for i in s] for u, s in seqs.items()}, len(items) + 1


def training_windows(seqs, max_len, how):
    """Rows of max_len+1 items, right-aligned (0 pads on the left)."""
    rows = []
    for s in seqs.values():
        train = s[:-2]  # the last two are the validation and test targets
        if how == "last":
            cuts = [train[-(max_len + 1):]]
        else:  # cover: every target once; a window's first item is context only
            cuts, end = [], len(train)
            while end > 1:
                start = max(0, end - (max_len + 1))
                cuts.append(train[start:end])
                end = start + 1
        for c in cuts:
            if len(c) >= 2:
                row = np.zeros(max_len + 1, dtype=np.int64)
                row[-len(c):] = c
                rows.append(row)
    return torch.from_numpy(np.stack(rows))


class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask):
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + self.drop(a)
        return x + self.drop(self.ff(self.ln2(x)))


class SASRec(nn.Module):
    def __init__(self, n_items, max_len, d, layers, heads, dropout):
        super().__init__()
        self.items = nn.Embedding(n_items, d, padding_idx=0)
        self.pos = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.d = d
        # small tables (N(0, 1) times sqrt(d) would start the softmax saturated)
        nn.init.xavier_normal_(self.items.weight)
        nn.init.xavier_normal_(self.pos.weight)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, seq):  # [B, L] right-aligned, 0 = padding -> [B, L, d]
        B, L = seq.shape
        x = self.items(seq) * math.sqrt(self.d) + self.pos.weight[-L:].unsqueeze(0)
        pad = seq == 0
        x = self.drop(x) * (~pad).unsqueeze(-1)
        # causal, and no attending to padding; a position always sees itself so
        # that no row is all -inf (padding rows are never read)
        causal = torch.ones(L, L, dtype=torch.bool).triu(1)
        hide = causal.unsqueeze(0) | pad.unsqueeze(1)
        hide = hide & ~torch.eye(L, dtype=torch.bool).unsqueeze(0)
        mask = torch.zeros(B, L, L).masked_fill(hide, float("-inf"))
        mask = mask.repeat_interleave(self.blocks[0].attn.num_heads, 0)
        for b in self.blocks:
            x = b(x, mask) * (~pad).unsqueeze(-1)
        return self.ln(x)


def evaluate(model, seqs, split, max_len, n_items, ks=(10, 20, 50, 100), batch=256):
    model.eval()
    users = list(seqs)
    hits = {k: 0.0 for k in ks}
    ndcg = {k: 0.0 for k in ks}
    with torch.no_grad():
        W = model.items.weight
        for b in range(0, len(users), batch):
            hs, tg = [], []
            for u in users[b:b + batch]:
                s = seqs[u]
                cut = len(s) - (1 if split == "test" else 2)
                hs.append(s[:cut]); tg.append(s[cut])
            rows = np.zeros((len(hs), max_len), dtype=np.int64)
            for r, h in enumerate(hs):
                h = h[-max_len:]
                rows[r, -len(h):] = h
            q = model(torch.from_numpy(rows))[:, -1]
            sc = q @ W.T
            sc[:, 0] = -float("inf")
            for r, h in enumerate(hs):
                sc[r, torch.tensor(h)] = -float("inf")
            t = torch.tensor(tg)
            rank = (sc > sc[torch.arange(len(t)), t].unsqueeze(1)).sum(1)
            for k in ks:
                hit = (rank < k).float()
                hits[k] += hit.sum().item()
                ndcg[k] += (hit / torch.log2(rank.float() + 2)).sum().item()
    n = len(users)
    return {**{f"recall@{k}": hits[k] / n for k in ks}, **{f"ndcg@{k}": ndcg[k] / n for k in ks}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--min-rating", type=float, default=4.0)
    ap.add_argument("--min-len", type=int, default=5)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--windows", choices=["last", "cover"], default="cover")
    ap.add_argument("--loss", choices=["full", "bce"], default="full")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=32, help="windows a step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--patience", type=int, default=8, help="epochs without a better validation recall@10")
    ap.add_argument("--minutes", type=float, default=0, help="stop training after this wall time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed); np.random.seed(a.seed)
    seqs, n_items = load(a.data, a.min_rating, a.min_len)
    X = training_windows(seqs, a.max_len, a.windows)
    targets = int((X[:, 1:] > 0).sum())
    model = SASRec(n_items, a.max_len, a.dim, a.layers, a.heads, a.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.98))
    log = {"args": vars(a), "users": len(seqs), "items": n_items - 1, "windows": len(X),
           "targets": targets, "epochs": []}
    print(json.dumps({k: v for k, v in log.items() if k != "epochs"}), flush=True)
    best, best_state, since, t_start = -1.0, None, 0, time.time()
    for ep in range(1, a.epochs + 1):
        model.train()
        perm = torch.randperm(len(X))
        t0, total, n = time.time(), 0.0, 0
        for b in range(0, len(X), a.batch):
            w = X[perm[b:b + a.batch]]
            inp, out = w[:, :-1], w[:, 1:]
            h = model(inp)
            real = out > 0
            h, pos = h[real], out[real]
            if a.loss == "full":
                logits = h @ model.items.weight.T
                logits[:, 0] = -float("inf")
                loss = F.cross_entropy(logits, pos)
            else:
                neg = torch.randint(1, n_items, pos.shape)
                lp = (h * model.items(pos)).sum(-1)
                ln = (h * model.items(neg)).sum(-1)
                loss = F.binary_cross_entropy_with_logits(torch.cat([lp, ln]), torch.cat([torch.ones_like(lp), torch.zeros_like(ln)]))
            opt.zero_grad(); loss.backward(); opt.step()
            total += loss.item() * len(pos); n += len(pos)
        secs = time.time() - t0
        val = evaluate(model, seqs, "val", a.max_len, n_items)
        row = {"epoch": ep, "loss": total / n, "seconds": secs, "positions_per_s": n / secs,
               **{"val_" + k: v for k, v in val.items()}}
        log["epochs"].append(row)
        print(json.dumps(row), flush=True)
        if val["recall@10"] > best:
            best, since = val["recall@10"], 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            log["best_epoch"] = ep
        else:
            since += 1
        if since >= a.patience or (a.minutes and time.time() - t_start > 60 * a.minutes):
            break
    model.load_state_dict(best_state)
    log["test"] = evaluate(model, seqs, "test", a.max_len, n_items)
    log["minutes"] = (time.time() - t_start) / 60
    print(json.dumps({"best_epoch": log["best_epoch"], "test": log["test"]}), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(log, f, indent=1)


if __name__ == "__main__":
    main()
