"""A PyTorch distributed job in one container, for kybernate's pod end-to-end run (test/e2e/pod-e2e.ts).

Two ranks (torch.multiprocessing, one process each) rendezvous through a TCPStore on 127.0.0.1 and train a
small model with DistributedDataParallel over gloo: on the CPU, or with CUDA tensors on one GPU (NCCL refuses two
ranks on one GPU). Every connection between the ranks and to the store is on loopback (GLOO_SOCKET_IFNAME=lo),
both ends in the container, so a restore into another pod can keep them (tcp-established).

Deterministic: the same seeds give the same losses, step for step, so a run that was checkpointed and restored
must log exactly the losses of an uninterrupted one. Rank 0 appends {"step", "loss"} to --log (opened and closed
at each step: CRIU restores an open file only at the size it had) and rewrites --status.
"""

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_status(path, record):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def rank_main(rank, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(1234)
    device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 1)).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0] if args.device == "cuda" else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    data = torch.Generator().manual_seed(100 + rank)
    for step in range(args.steps):
        x = torch.randn(32, 64, generator=data).to(device)
        y = x.sum(dim=1, keepdim=True).sin()
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        mean /= 2
        if rank == 0:
            append(args.log, {"step": step, "loss": mean.item()})
            if args.status:
                write_status(args.status, {"pid": os.getpid(), "step": step, "steps": args.steps, "done": False})
        time.sleep(args.sleep)
    dist.barrier()
    if rank == 0 and args.status:
        write_status(args.status, {"pid": os.getpid(), "step": args.steps - 1, "steps": args.steps, "done": True})
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--sleep", type=float, default=0.05, help="seconds between steps (time to checkpoint mid-run)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--port", type=int, default=29500)
    p.add_argument("--log", required=True)
    p.add_argument("--status")
    args = p.parse_args()
    mp.spawn(rank_main, args=(args,), nprocs=2, join=True)


if __name__ == "__main__":
    main()
