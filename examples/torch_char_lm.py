"""A character language model in PyTorch with a compiled cell inside: embedding ->
rc.torch.RNN (a peephole LSTM by default, a cell torch.nn does not have) -> linear head,
trained by truncated BPTT on Shakespeare's sonnets (shipped with the package) with
torch.optim.Adam and gradient clipping, then sampled one character at a time.

    python examples/torch_char_lm.py                          # a few minutes
    python examples/torch_char_lm.py --full                   # 2 layers of 256, longer
    torchrun --nproc_per_node=2 examples/torch_char_lm.py     # data-parallel (DDP, gloo)

Under torchrun (or any launcher setting RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)
each process trains on its share of the parallel text streams and
DistributedDataParallel averages the gradients; across machines, run the same command on
each with --nnodes, --node_rank and --master_addr.
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
from torch import nn

import rnncompiler as rc
from rnncompiler import models as rm


class CharLM(nn.Module):
    """embedding -> recurrent layers of a compiled cell -> logits over the characters."""

    def __init__(self, cell, vocab, embed, hidden, layers, dropout):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = rc.torch.RNN(cell, embed, hidden, num_layers=layers, dropout=dropout)
        self.head = nn.Linear(self.rnn.output_size, vocab)

    def forward(self, ids, hx=None):
        out, hx = self.rnn(self.embed(ids), hx)
        return self.head(out), hx


def detach(hx):
    """The state carried to the next window, cut from the graph of this one."""
    return tuple(h.detach() for h in hx) if isinstance(hx, tuple) else hx.detach()


def bits_per_char(model, ids):
    """Mean cross-entropy in bits of predicting ids[1:] from ids[:-1], read in one pass."""
    model.eval()
    with torch.no_grad():
        logits, _ = model(ids[:-1, None])
        loss = nn.functional.cross_entropy(logits[:, 0], ids[1:])
    model.train()
    return float(loss) / float(torch.log(torch.tensor(2.0)))


def train_epoch(model, opt, stream, bptt, deadline):
    """One pass over the streams (N, B) in windows of `bptt` steps; the state carries over
    from window to window. Returns the mean loss (nats per character)."""
    hx, losses = None, []
    for start in range(0, len(stream) - 1, bptt):
        inputs, targets = stream[start:start + bptt], stream[start + 1:start + bptt + 1]
        inputs = inputs[:len(targets)]
        logits, hx = model(inputs, hx)
        hx = detach(hx)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(float(loss.detach()))
        if deadline is not None and time.perf_counter() > deadline:
            break
    return sum(losses) / len(losses)


def sample(model, vocab, prompt, n, temperature, seed):
    """n characters drawn one at a time after the prompt, each fed back as the next input."""
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        logits, hx = model(torch.from_numpy(vocab.encode(prompt))[:, None])
        out = []
        for _ in range(n):
            probs = torch.softmax(logits[-1, 0] / temperature, dim=0)
            nxt = torch.multinomial(probs, 1, generator=gen)
            out.append(int(nxt))
            logits, hx = model(nxt[:, None], hx)
    model.train()
    return prompt + vocab.decode(out)


def in_sync(model):
    """True when every process holds exactly the same parameters."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(g, flat) for g in gathered)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", default="peephole_lstm", choices=sorted(rc.cells.ALL),
                    help="a cell of rc.cells")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--batch", type=int, default=32, help="parallel streams, over all processes")
    ap.add_argument("--bptt", type=int, default=50, help="steps per window")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seconds", type=float, default=None, help="stop training after this long")
    ap.add_argument("--sample", type=int, default=300, help="characters per sample")
    ap.add_argument("--threads", type=int, default=1, help="torch and kernel threads")
    ap.add_argument("--full", action="store_true", help="2 layers of 256, dropout 0.2, 30 epochs")
    args = ap.parse_args(argv)
    if args.full:
        args.hidden, args.layers, args.dropout, args.epochs = 256, 2, 0.2, 30
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rc.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")        # MASTER_ADDR/PORT, RANK from the launcher
    rank = dist.get_rank() if world > 1 else 0
    if args.batch % world:
        raise SystemExit("--batch %d: expected a multiple of the %d processes"
                         % (args.batch, world))
    say = print if rank == 0 else (lambda *a: None)

    text = rm.load_text("sonnets")
    vocab = rm.CharVocab(text)
    ids = vocab.encode(text)
    split = int(0.9 * len(ids))
    stream = torch.from_numpy(rm.streams(ids[:split], args.batch))      # (N, batch)
    share = args.batch // world
    stream = stream[:, rank * share:(rank + 1) * share]                 # this process's rows
    held_out = torch.from_numpy(ids[split:])

    torch.manual_seed(0)                        # the same initial weights in every process
    model = CharLM(rc.cells.ALL[args.cell], len(vocab), args.embed, args.hidden,
                   args.layers, args.dropout)
    say("%d characters, %d distinct; %d processes x %d streams of %d steps; held out: %d"
        % (len(ids), len(vocab), world, share, len(stream), len(held_out)))
    say(model)
    trained = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.Adam(trained.parameters(), lr=args.lr)
    before = bits_per_char(model, held_out)
    t0 = time.perf_counter()
    deadline = None if args.seconds is None else t0 + args.seconds
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(trained, opt, stream, args.bptt, deadline)
        say("epoch %2d  training loss %.3f nats/char  held out %.3f bits/char  (%.0f s)"
            % (epoch, loss, bits_per_char(model, held_out), time.perf_counter() - t0))
        if deadline is not None and time.perf_counter() > deadline:
            break
    after = bits_per_char(model, held_out)
    say("held-out bits per character: %.3f before training, %.3f after" % (before, after))
    ok = after < before
    if world > 1:
        synced = in_sync(model)
        say("parameters identical in all %d processes: %s" % (world, synced))
        ok = ok and synced
        # every rank past its last collective before any tears its connections down: a
        # rank destroying its group while a peer still reads from it can abort the peer
        # in gloo's transport thread ("terminate called without an active exception")
        dist.barrier()
        dist.destroy_process_group()
    for temperature in (0.5, 1.0):
        say("\n--- temperature %.1f ---\n%s"
            % (temperature, sample(model, vocab, "Shall I compare ", args.sample,
                                   temperature, seed=1)))
    if not ok:
        say("FAILED: the held-out loss did not fall (%.3f -> %.3f) or the processes "
            "diverged" % (before, after))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
