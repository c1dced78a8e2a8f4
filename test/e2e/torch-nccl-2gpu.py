"""A deterministic data-parallel PyTorch training job for kybernate's multi-GPU check (issue 15).

Run without --rank it is the launcher: it starts --world ranks as child processes of itself (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT in each one's environment, as torchrun sets them, so they show in
/proc/PID/environ), waits for them and exits with the first failure. Each rank trains the same small MLP (same
seed) on its own fixed shard of synthetic data; after each backward pass the gradients are all-reduced (sum,
then / world) and the step's global loss too, so every rank holds the same weights. Rank 0 appends each step's
loss, exact (float.hex), to --log, opening and closing the file each time (CRIU restores an open regular file only
when its size is unchanged), and rewrites --status. After a checkpoint/restore the losses of the steps that
follow must equal, bit for bit, those of an uninterrupted run with the same arguments.

--backend nccl --device cuda: one GPU per rank (cuda:RANK), NCCL. --backend gloo --device cpu: the same job on
CPUs (no GPU, for a machine without one). --timeout: the process group's collective timeout in seconds; a
checkpoint freezes the ranks in the middle of a step, and the time until the restore counts against it.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--rank", type=int, default=-1, help="set by the launcher")
    p.add_argument("--backend", choices=["nccl", "gloo"], default="nccl")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--log", required=True)
    p.add_argument("--status", default="")
    p.add_argument("--ballast-gib", type=float, default=0, help="extra device memory per rank")
    p.add_argument("--port", type=int, default=29517)
    p.add_argument("--timeout", type=float, default=3600)
    return p.parse_args()


def launch(args) -> int:
    ranks = []
    for rank in range(args.world):
        env = dict(os.environ)
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(args.world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(args.port),
        )
        ranks.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--rank", str(rank)], env=env))
    rc = 0
    for r in ranks:
        code = r.wait()
        rc = rc or code
    return rc


def train(args) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch
    import torch.distributed as dist

    rank, world = args.rank, args.world
    if args.device == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
        # Two ranks on a small machine: more threads each only fight over the cores.
        torch.set_num_threads(1)
    dist.init_process_group(
        args.backend,
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=args.timeout),
    )
    torch.manual_seed(1234)
    torch.use_deterministic_algorithms(True)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 16)).to(device)
    # Each rank's own shard, fixed: drawn from a generator seeded by the rank, after the model's init.
    g = torch.Generator().manual_seed(5678 + rank)
    x = torch.randn(2048, 256, generator=g).to(device)
    y = torch.randn(2048, 16, generator=g).to(device)
    ballast = torch.ones(int(args.ballast_gib * 2**30 / 4), device=device) if args.ballast_gib else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step in range(args.steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        for param in model.parameters():
            dist.all_reduce(param.grad)
            param.grad /= world
        optimizer.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        value = (total / world).item()
        if rank == 0:
            with open(args.log, "a") as log:
                log.write(json.dumps({"step": step, "loss": float(value).hex()}) + "\n")
            if args.status:
                ballast_ok = ballast is None or bool(torch.all(ballast[:: 1 << 20] == 1).item())
                tmp = args.status + ".tmp"
                with open(tmp, "w") as status:
                    status.write(
                        json.dumps(
                            {
                                "pid": os.getpid(),
                                "counter": step,
                                "verified": step,
                                "verifyFailures": 0 if ballast_ok else 1,
                                "world": world,
                                "backend": args.backend,
                            }
                        )
                        + "\n"
                    )
                os.replace(tmp, args.status)
        time.sleep(args.interval)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    args = parse()
    if args.rank < 0:
        sys.exit(launch(args))
    train(args)


if __name__ == "__main__":
    main()
