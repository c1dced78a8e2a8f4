"""A deterministic PyTorch training loop for kybernate's GPU end-to-end check.

Trains a small MLP on fixed synthetic data with a fixed seed and deterministic kernels, one step every
--interval seconds, and appends each step's loss (exact, as float.hex) to --log, opening and closing the file
each time (CRIU restores a process's open regular files only when their size is unchanged). After a
checkpoint/restore the losses of the steps that follow must equal those of an uninterrupted run.
--ballast-gib holds extra device memory so the checkpoint moves a meaningful amount of VRAM.
"""
import argparse
import json
import os
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--log", required=True)
    parser.add_argument("--status", default="")
    parser.add_argument("--ballast-gib", type=float, default=0)
    args = parser.parse_args()

    torch.manual_seed(1234)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    device = torch.device("cuda")
    ballast = torch.ones(int(args.ballast_gib * 2**30 / 4), device=device) if args.ballast_gib else None
    x = torch.randn(4096, 256, device=device)
    y = torch.randn(4096, 16, device=device)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 16)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step in range(args.steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        value = loss.item()
        with open(args.log, "a") as log:
            log.write(json.dumps({"step": step, "loss": float(value).hex()}) + "\n")
        if args.status:
            ballast_ok = ballast is None or bool(torch.all(ballast[:: 1 << 20] == 1).item())
            tmp = args.status + ".tmp"
            with open(tmp, "w") as status:
                status.write(
                    json.dumps({"pid": os.getpid(), "counter": step, "verified": step, "verifyFailures": 0 if ballast_ok else 1})
                    + "\n"
                )
            os.replace(tmp, args.status)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
