#!/usr/bin/env python3
"""PyTorch reference for Attune's SASRec training speed (bench/README.md, "SASRec training speed").

The model is SASRec as in pmixer/SASRec.pytorch (its classic layout, before the norm_first option): item embedding × sqrt(d) + learned positional embedding, embedding dropout, timeline
(padding) mask, then per block Q = LayerNorm(x), MultiheadAttention(Q, x, x) with a causal mask,
residual Q + attention, LayerNorm, point-wise feed-forward (Conv1d k=1, dropout, ReLU, Conv1d k=1,
dropout, residual), timeline mask; a final LayerNorm. Loss: BCEWithLogits on the positive logit and
one sampled negative's logit at every non-padding position; Adam, lr 1e-3, betas (0.9, 0.98).
Parameters are initialised xavier-normal where they have 2+ dimensions, as pmixer's main.py does.

Data: the real sequences (`user_id item_id` per line, grouped by user in time order). Each user's
training row is the classic next-item shift: input = the items before the last, target = the items
from the second on, both cut to their last `maxlen` positions and left-padded with 0; the negative at
each non-padding position is an item the user never had, drawn uniformly. Batches are `batch` users
drawn without replacement from a permutation made with a fixed seed (a new permutation each epoch).
All batches, negatives included, are built before the clock starts: a step is forward + loss +
backward + Adam (pmixer samples in worker processes, off the training loop's critical path).
amazon-games users have ~9 items, so these rows are ~96 % padding; PyTorch computes the padded
layout in full, as pmixer does. `--full-rows` times the same step on rows with no padding at all
(the rows of the Rust bench's `b128_l200_h50_full`), where both sides do the same arithmetic.

Prints one JSON object on stdout; progress and the torch build go to stderr.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch

DEFAULT_DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "amazon-games",
    "sequences.txt",
)


class PointWiseFeedForward(torch.nn.Module):
    def __init__(self, hidden_units, dropout_rate):
        super().__init__()
        self.conv1 = torch.nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
        self.dropout1 = torch.nn.Dropout(p=dropout_rate)
        self.relu = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
        self.dropout2 = torch.nn.Dropout(p=dropout_rate)

    def forward(self, inputs):
        outputs = self.dropout2(
            self.conv2(self.relu(self.dropout1(self.conv1(inputs.transpose(-1, -2)))))
        )
        outputs = outputs.transpose(-1, -2)  # Conv1d wants (N, C, L)
        outputs += inputs
        return outputs


class SASRec(torch.nn.Module):
    def __init__(self, item_num, hidden_units, maxlen, num_blocks, num_heads, dropout_rate):
        super().__init__()
        self.item_emb = torch.nn.Embedding(item_num + 1, hidden_units, padding_idx=0)
        self.pos_emb = torch.nn.Embedding(maxlen, hidden_units)
        self.emb_dropout = torch.nn.Dropout(p=dropout_rate)
        self.attention_layernorms = torch.nn.ModuleList()
        self.attention_layers = torch.nn.ModuleList()
        self.forward_layernorms = torch.nn.ModuleList()
        self.forward_layers = torch.nn.ModuleList()
        self.last_layernorm = torch.nn.LayerNorm(hidden_units, eps=1e-8)
        for _ in range(num_blocks):
            self.attention_layernorms.append(torch.nn.LayerNorm(hidden_units, eps=1e-8))
            self.attention_layers.append(
                torch.nn.MultiheadAttention(hidden_units, num_heads, dropout_rate)
            )
            self.forward_layernorms.append(torch.nn.LayerNorm(hidden_units, eps=1e-8))
            self.forward_layers.append(PointWiseFeedForward(hidden_units, dropout_rate))

    def log2feats(self, log_seqs):
        seqs = self.item_emb(log_seqs)
        seqs *= self.item_emb.embedding_dim ** 0.5
        batch, length = log_seqs.shape
        positions = torch.arange(length, device=log_seqs.device).unsqueeze(0).expand(batch, -1)
        seqs += self.pos_emb(positions)
        seqs = self.emb_dropout(seqs)

        timeline_mask = log_seqs == 0
        seqs *= ~timeline_mask.unsqueeze(-1)

        attention_mask = ~torch.tril(
            torch.ones((length, length), dtype=torch.bool, device=log_seqs.device)
        )
        for i in range(len(self.attention_layers)):
            seqs = torch.transpose(seqs, 0, 1)  # MultiheadAttention wants (L, N, E)
            q = self.attention_layernorms[i](seqs)
            mha_outputs, _ = self.attention_layers[i](q, seqs, seqs, attn_mask=attention_mask)
            seqs = q + mha_outputs
            seqs = torch.transpose(seqs, 0, 1)
            seqs = self.forward_layernorms[i](seqs)
            seqs = self.forward_layers[i](seqs)
            seqs *= ~timeline_mask.unsqueeze(-1)
        return self.last_layernorm(seqs)

    def forward(self, log_seqs, pos_seqs, neg_seqs):
        log_feats = self.log2feats(log_seqs)
        pos_logits = (log_feats * self.item_emb(pos_seqs)).sum(dim=-1)
        neg_logits = (log_feats * self.item_emb(neg_seqs)).sum(dim=-1)
        return pos_logits, neg_logits


def load_sequences(path):
    """Item sequences per user, in file order; item ids as in the file (1-based, 0 free)."""
    data = np.loadtxt(path, dtype=np.int64, ndmin=2)
    users, items = data[:, 0], data[:, 1]
    if items.min() < 1:
        sys.exit(f"{path}: item ids must start at 1 (0 is padding)")
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    if len(np.unique(users)) != len(starts):
        sys.exit(f"{path}: lines are not grouped by user")
    return np.split(items, starts[1:]), int(items.max())


def build_batch(seqs, users, maxlen, item_num, rng):
    """(input, positive, negative) int64 arrays of shape (len(users), maxlen), left-padded with 0."""
    n = len(users)
    inp = np.zeros((n, maxlen), dtype=np.int64)
    pos = np.zeros((n, maxlen), dtype=np.int64)
    neg = np.zeros((n, maxlen), dtype=np.int64)
    for row, u in enumerate(users):
        s = seqs[u]
        x, y = s[:-1][-maxlen:], s[1:][-maxlen:]
        k = len(y)
        if k == 0:
            continue
        inp[row, maxlen - k:] = x
        pos[row, maxlen - k:] = y
        cand = rng.integers(1, item_num + 1, size=k)
        bad = np.isin(cand, s)
        while bad.any():  # an item the user had: draw again (as pmixer's random_neq)
            cand[bad] = rng.integers(1, item_num + 1, size=int(bad.sum()))
            bad = np.isin(cand, s)
        neg[row, maxlen - k:] = cand
    return inp, pos, neg


def make_batches(seqs, count, batch_size, maxlen, item_num, seed):
    """`count` batches: users drawn without replacement from seeded permutations (one per epoch)."""
    rng = np.random.default_rng(seed)
    per_epoch = -(-len(seqs) // batch_size)  # every user once; the last batch is the remainder
    batches, perm, cursor = [], None, per_epoch
    for _ in range(count):
        if cursor == per_epoch:
            perm, cursor = rng.permutation(len(seqs)), 0
        users = perm[cursor * batch_size:(cursor + 1) * batch_size]
        cursor += 1
        batches.append(tuple(torch.from_numpy(a) for a in build_batch(seqs, users, maxlen, item_num, rng)))
    return batches, per_epoch


def busy_cpu_s():
    """(CPU seconds busy on the whole machine, CPU seconds of this process), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    own = resource.getrusage(resource.RUSAGE_SELF)
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle - steal) / hz, own.ru_utime + own.ru_stime


def make_full_row_batches(seqs, count, batch_size, maxlen, item_num, seed):
    """`count` batches with no padding at all: every user's sequence concatenated in file order and
    cut into consecutive windows of maxlen + 1 real items (maxlen inputs, maxlen targets); batch b
    holds windows batch·b .. batch·b + batch, cycling over the whole windows there are. The same
    rows as `sasrec_train_step/b128_l200_h50_full` in crates/attune-model/benches/sasrec.rs."""
    stream = np.concatenate(seqs)
    n_windows = len(stream) // (maxlen + 1)
    windows = list(stream[:n_windows * (maxlen + 1)].reshape(n_windows, maxlen + 1))
    n_batches = n_windows // batch_size
    if n_batches == 0:
        sys.exit(f"too few items for one unpadded batch of {batch_size} x {maxlen}")
    rng = np.random.default_rng(seed)
    built = [
        tuple(torch.from_numpy(a) for a in build_batch(
            windows, range(b * batch_size, (b + 1) * batch_size), maxlen, item_num, rng))
        for b in range(min(count, n_batches))
    ]
    return [built[i % len(built)] for i in range(count)]


def train_step(model, optimizer, criterion, batch):
    inp, pos, neg = batch
    pos_logits, neg_logits = model(inp, pos, neg)
    optimizer.zero_grad()
    indices = pos != 0
    loss = criterion(pos_logits[indices], torch.ones_like(pos_logits[indices]))
    loss += criterion(neg_logits[indices], torch.zeros_like(neg_logits[indices]))
    loss.backward()
    optimizer.step()
    return loss.item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("SASREC_DATA", DEFAULT_DATA))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op and inter-op threads")
    p.add_argument("--steps", type=int, default=20, help="timed steps (step mode)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before the clock starts")
    p.add_argument("--epoch", action="store_true",
                   help="time one whole epoch (ceil(users / batch) steps, every user once) "
                   "instead of --steps")
    p.add_argument("--full-rows", action="store_true",
                   help="rows with no padding (consecutive windows of maxlen + 1 items of the "
                   "concatenated sequences) instead of one user per row")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--maxlen", type=int, default=200)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    if args.epoch and args.full_rows:
        p.error("--epoch counts users: it does not go with --full-rows")

    # Both before any parallel work: set_num_interop_threads fails once the pool has started.
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(args.seed)

    load_before = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    seqs, item_num = load_sequences(args.data)
    per_epoch = -(-len(seqs) // args.batch)
    timed = per_epoch if args.epoch else args.steps
    # Warmup batches from their own stream, so the timed ones are the seeded permutation's first
    # (in --epoch mode: exactly one epoch, every user once).
    if args.full_rows:
        batches = make_full_row_batches(
            seqs, args.warmup + timed, args.batch, args.maxlen, item_num, args.seed)
        warmup, batches = batches[:args.warmup], batches[args.warmup:]
    else:
        warmup, _ = make_batches(
            seqs, args.warmup, args.batch, args.maxlen, item_num, args.seed + 1)
        batches, per_epoch = make_batches(seqs, timed, args.batch, args.maxlen, item_num, args.seed)
    print(f"{len(seqs)} users, {item_num} items, {len(warmup) + len(batches)} batches built in "
          f"{time.perf_counter() - t0:.1f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op threads",
          file=sys.stderr)

    model = SASRec(item_num, args.hidden, args.maxlen, args.blocks, args.heads, args.dropout)
    for _, param in model.named_parameters():
        if param.dim() >= 2:
            torch.nn.init.xavier_normal_(param.data)
    model.train()
    criterion = torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98))

    losses = []
    for batch in warmup:
        losses.append(train_step(model, optimizer, criterion, batch))
    times = []
    cpu_before = busy_cpu_s()
    wall = time.perf_counter()
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        losses.append(train_step(model, optimizer, criterion, batch))
        times.append(time.perf_counter() - start)
        if args.epoch and (i + 1) % 50 == 0:
            print(f"  step {i + 1}/{timed}: {statistics.fmean(times):.3f} s/step, "
                  f"loss {losses[-1]:.4f}", file=sys.stderr)
    wall = time.perf_counter() - wall
    cpu_after = busy_cpu_s()

    report = {
        "threads": args.threads,
        "step_s_mean": round(statistics.fmean(times), 4),
        "step_s_median": round(statistics.median(times), 4),
        "step_s_min": round(min(times), 4),
        "step_s_max": round(max(times), 4),
        "steps": len(times),
        "warmup": args.warmup,
        "torch": torch.__version__,
        "batch": args.batch,
        "maxlen": args.maxlen,
        "hidden": args.hidden,
        "blocks": args.blocks,
        "heads": args.heads,
        "dropout": args.dropout,
        "rows": "full" if args.full_rows else "users",
        "real_positions": sum(int((b[1] != 0).sum()) for b in batches) / len(batches),
        "users": len(seqs),
        "items": item_num,
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
        "load_avg_before": load_before,
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    if cpu_before and cpu_after:
        # Cores kept busy by other processes while the steps ran: 0 on a quiet machine, up to
        # (cores - threads) without slowing this run, more and this run waited for a core.
        others = (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])
        report["other_processes_cores"] = round(max(others, 0.0) / wall, 2)
        # This process's CPU seconds per step (all its threads). At 1 thread it is close to the
        # step time on a quiet machine, even when other processes kept the cores busy.
        report["cpu_s_per_step"] = round((cpu_after[1] - cpu_before[1]) / len(times), 4)
    if args.full_rows:
        pass
    elif args.epoch:
        report["epoch_steps"] = per_epoch
        report["epoch_s"] = round(wall, 2)
        report["epoch_s_kind"] = "measured: one whole epoch of training steps, batch building excluded"
    else:
        report["epoch_steps"] = per_epoch
        report["epoch_s_estimated"] = round(per_epoch * statistics.fmean(times), 1)
        report["epoch_s_kind"] = ("estimated: epoch_steps x step_s_mean (a slight overestimate: "
                                  "the epoch's last batch holds only the remaining users)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
