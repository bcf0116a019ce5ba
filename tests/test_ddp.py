"""rc.torch.RNN under torch.nn.parallel.DistributedDataParallel: two processes (gloo on
127.0.0.1, launched as torchrun would, through MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE)
training on halves of a global batch end with the parameters of one process trained on the
whole batch (float64, 1e-10); and examples/torch_char_lm.py runs data-parallel.

This file is also the worker: `python tests/test_ddp.py OUT_DIR` in each process."""
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow      # two training processes under DDP

torch = pytest.importorskip("torch")
nn = torch.nn

import rnncompiler as rc  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, E, H, T, GLOBAL_BATCH, STEPS = 9, 3, 4, 6, 8, 4


class Model(nn.Module):
    """embedding -> two layers of a peephole LSTM -> linear head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, E)
        self.rnn = rc.torch.RNN(rc.cells.peephole_lstm, E, H, num_layers=2,
                                dtype=torch.float64)
        self.head = nn.Linear(H, VOCAB)

    def forward(self, ids, lengths):
        out, _ = self.rnn(self.embed(ids), lengths=lengths)
        return self.head(out)


def build():
    torch.manual_seed(0)
    return Model().double()


def global_batch():
    """Token ids (T + 1, GLOBAL_BATCH) and lengths, the same in every process."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (T + 1, GLOBAL_BATCH), generator=g)
    lengths = torch.randint(1, T + 1, (GLOBAL_BATCH,), generator=g)
    return ids, lengths


def train(model, ids, lengths):
    """STEPS Adam steps on the mean cross-entropy over the valid steps of these rows."""
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    mask = (torch.arange(T)[:, None] < lengths[None, :]).double()
    for _ in range(STEPS):
        opt.zero_grad()
        logits = model(ids[:-1], lengths)
        ce = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ids[1:].reshape(-1),
                                         reduction="none").reshape(T, -1)
        # per-row means, averaged: the mean over the global batch is the mean of the halves
        ((ce * mask).sum(0) / lengths).mean().backward()
        opt.step()


def worker(out_dir):
    """One DDP process: its half of the global batch; saves its final parameters."""
    import torch.distributed as dist
    torch.set_num_threads(1)
    rc.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ids, lengths = global_batch()
    share = GLOBAL_BATCH // world
    rows = slice(rank * share, (rank + 1) * share)
    model = nn.parallel.DistributedDataParallel(build())
    train(model, ids[:, rows], lengths[rows])
    torch.save(model.module.state_dict(), os.path.join(out_dir, "rank%d.pt" % rank))
    # both ranks reach here before either tears the group down: a rank that destroys it
    # while the other still talks to it can abort in gloo ("terminate called ...")
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, n=2, timeout=120):
    """Run `python args...` in n processes as ranks of one group; their outputs."""
    port = free_port()
    procs = []
    for rank in range(n):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   LOCAL_RANK=str(rank), WORLD_SIZE=str(n), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable] + args, cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, "rank %d failed:\n%s\n%s" % (rank, out[-2000:], err[-3000:])
    return [out for out, _ in outs]


def test_two_processes_reach_the_single_process_parameters(tmp_path):
    ref = build()
    train(ref, *global_batch())            # also puts the kernels in the shared cache
    launch([os.path.abspath(__file__), str(tmp_path)])
    ranks = [torch.load(tmp_path / ("rank%d.pt" % r)) for r in range(2)]
    initial = build().state_dict()
    for name, value in ref.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        assert float((ranks[0][name] - value).abs().max()) < 1e-10, name
    moved = max(float((ref.state_dict()[k] - initial[k]).abs().max()) for k in initial)
    assert moved > 0.05                    # the runs trained: equal, not merely untouched


def test_example_runs_data_parallel():
    out = launch([os.path.join("examples", "torch_char_lm.py"), "--hidden", "16", "--embed",
                  "8", "--batch", "4", "--bptt", "25", "--epochs", "1", "--sample", "10"])
    assert "parameters identical in all 2 processes: True" in out[0]
    assert "held-out bits per character" in out[0] and out[1] == ""


if __name__ == "__main__":
    worker(sys.argv[1])
