"""Several processes as one run: torchrun, ranks, and what the ranks agree on.

Supervisor side (no torch imported here): the processes a session asks for (`resolve_launch`), the
torchrun command that starts them (`torchrun_command`), the command each node runs
(`node_commands`), and the rank reports the supervisor folds into the run's outcome.

Worker side: which process this is (`Rank`, from torchrun's RANK / LOCAL_RANK / WORLD_SIZE), a
writer that writes nothing on ranks other than 0 (`NullEventWriter`), and the one collective per
optimizer step that makes the ranks agree on a stop or a pause and sums their tokens (`agree`).

Who writes what: global rank 0 writes events.jsonl, the checkpoints, the adapter and the merged
model. Every rank writes its own report, `ranks/rank-R.json`: once when it starts (pid, host) and
once when it ends (ok, or the error's kind and one-line message). torchrun turns any worker's exit
code into 1 and then ends the other workers, so the supervisor decides the outcome from rank 0's
events and these reports: a rank that failed is named in an `error` event with its `rank`, and a
rank that ended without a word (kill -9, the kernel's out-of-memory killer) is named too.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.errors import UserError

RANKS_DIR = "ranks"
STRATEGIES = ("none", "ddp", "fsdp")


# -- the launch: how many processes, on how many nodes, with which strategy ----------------------
@dataclass(frozen=True)
class Launch:
    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: Optional[str] = None
    strategy: str = "none"  # "none" | "ddp" | "fsdp", never "auto"

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def leader(self) -> bool:
        """Node 0: where global rank 0 runs, and so where events, checkpoints and the adapter are written."""
        return self.node_rank == 0


def visible_gpus() -> int:
    """CUDA devices this process may use, without importing torch: CUDA_VISIBLE_DEVICES when set,
    else NVML's count; 0 without a GPU or a driver."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return len([d for d in listed.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: no GPU
        return 0


def resolve_launch(session, node_rank: Optional[int] = None, gpus: Optional[int] = None) -> Launch:
    """The processes a session's `distributed` section asks for on this node. `node_rank` (the
    command line's --node-rank) overrides the session's; `gpus` defaults to the visible GPUs."""
    d = session.distributed
    gpus = visible_gpus() if gpus is None else gpus
    rank = d.node_rank if node_rank is None else node_rank
    if rank < 0 or rank >= d.nnodes:
        raise UserError(f"--node-rank {rank}: this session has distributed.nnodes {d.nnodes}, so nodes are numbered 0 to {d.nnodes - 1}.")
    if d.strategy == "none":
        return Launch(1, 1, 0, None, "none")
    nproc = d.nproc_per_node if isinstance(d.nproc_per_node, int) else max(gpus, 1)
    if gpus and nproc > gpus:
        raise UserError(f"distributed.nproc_per_node is {nproc} but this node has {gpus} visible GPU(s); "
                        f"set it to {gpus} or \"auto\" (one process per GPU).")
    world = nproc * d.nnodes
    # "auto": DDP when there is more than one process. (The planner will pick FSDP when a copy of the
    # model does not fit one GPU; until then "auto" means DDP.)
    strategy = "none" if world == 1 else ("ddp" if d.strategy == "auto" else d.strategy)
    return Launch(nproc, d.nnodes, rank, d.rdzv_endpoint, strategy)


def first_backend(session, launch: Launch, on_gpu: bool) -> str:
    """The backend a run starts on: the session's, and for "auto" Unsloth where it imports, except
    QLoRA under FSDP on the CPU, which only the peft backend runs (Unsloth's FSDP2 refuses a 4-bit
    model there: unsloth/models/fsdp2_native.py)."""
    if session.backend == "peft":
        return "peft"
    if session.backend == "auto" and _qlora_under_fsdp(session, launch) and not on_gpu:
        return "peft"
    return "unsloth"


def _qlora_under_fsdp(session, launch: Launch) -> bool:
    return launch.strategy == "fsdp" and session.method == "qlora"


def check_strategy(session, launch: Launch, backend: str, on_gpu: bool) -> None:
    """Refuse, in one sentence, what cannot run. QLoRA under FSDP shards the packed 4-bit weights
    (stored as bnb_4bit_quant_storage = the compute dtype) on both backends on GPUs, and on the peft
    backend on the CPU too (engine.training.fsdp); Unsloth refuses 4-bit FSDP2 on the CPU."""
    check_offload(session, launch)
    if _qlora_under_fsdp(session, launch) and backend == "unsloth" and not on_gpu:
        raise UserError("QLoRA with distributed.strategy \"fsdp\" on the CPU runs on the peft backend only (Unsloth's "
                        "FSDP2 shards 4-bit weights on GPUs only); set backend \"peft\" or \"auto\".")


def check_offload(session, launch: Launch) -> None:
    """`distributed.cpu_offload` is FSDP's (the shards in RAM): refused, in one sentence, without
    FSDP over several processes. Both backends run it: the peft backend with FSDP2's
    CPUOffloadPolicy (engine.training.fsdp), the unsloth backend with its UNSLOTH_FSDP2_CPU_OFFLOAD."""
    d = session.distributed
    if not d.cpu_offload:
        return
    if d.strategy != "fsdp":
        raise UserError(f"distributed.cpu_offload keeps FSDP's shards in RAM, so it needs distributed.strategy \"fsdp\" "
                        f"(this session has \"{d.strategy}\"); set strategy \"fsdp\", or cpu_offload false.")
    if launch.strategy != "fsdp":
        raise UserError("distributed.cpu_offload needs FSDP over 2 or more processes, and this session starts one; "
                        "set distributed.nproc_per_node (or nnodes) above 1, or cpu_offload false.")


def torchrun_command(launch: Launch, worker_args: list[str], python: str = sys.executable) -> list[str]:
    """`python -m torch.distributed.run ... -m engine.training.worker ...` for this node.

    One node: --standalone (a local rendezvous on a free port). Several: the static rendezvous at
    node 0's rdzv_endpoint, so that --node_rank is honoured and global rank 0 (which writes the
    events) runs on node 0; torchrun's c10d rendezvous ignores --node_rank and numbers nodes by
    their sorted addresses, which would put the events on whichever node sorts first."""
    command = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(launch.nproc_per_node)]
    if launch.nnodes == 1:
        command.append("--standalone")
    else:
        command += ["--nnodes", str(launch.nnodes), "--node_rank", str(launch.node_rank),
                    "--rdzv_endpoint", str(launch.rdzv_endpoint), "--rdzv_backend", "static"]
    return command + ["-m", "engine.training.worker", *worker_args]


def node_commands(session, session_file: str | Path) -> list[str]:
    """The command each node runs, node 0 first: the same session, its own --node-rank."""
    from engine.session.edits import replay_command

    base = replay_command(session_file)
    return [f"{base} --node-rank {i}" for i in range(session.distributed.nnodes)]


def describe(launch: Launch) -> str:
    if not launch.distributed:
        return "one process"
    where = f", {launch.nproc_per_node} on each of {launch.nnodes} nodes" if launch.nnodes > 1 else " on this node"
    return f"{launch.world_size} processes{where} ({launch.strategy.upper()})"


# -- the worker's view: which rank is this --------------------------------------------------------
@dataclass(frozen=True)
class Rank:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> Rank:
        """What torchrun sets for each worker; one process without it."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class NullEventWriter:
    """The event writer of ranks other than 0: each event is still checked (a bad event is our bug
    on every rank) and returned, and written nowhere."""

    def __init__(self, run_dir: str | Path | None = None):
        self.path = None

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        from engine.runs.event_models import check_event

        record = {"event": event, "time": round(time.time(), 3), **fields}
        check_event(json.loads(json.dumps(record, default=str)))
        return record

    def close(self) -> None:
        pass


def agree(stop: bool, pause: bool, tokens: int, samples: int, device=None) -> tuple[bool, bool, int, int]:
    """One collective per optimizer step, on every rank: whether any rank was asked to stop or to
    pause (a STOP file or a signal seen by one rank only must stop all of them: a rank left behind
    waits forever in the next gradient all-reduce), and the tokens and samples all ranks trained in
    this step, for a throughput of the whole job. An all_reduce(SUM) of int64s: a flag summed over
    the ranks is above 0 exactly when its all_reduce(MAX) would be 1. One process: unchanged."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return stop, pause, tokens, samples
    values = torch.tensor([int(stop), int(pause), int(tokens), int(samples)], dtype=torch.int64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    s, p, t, n = (int(v) for v in values.tolist())
    return s > 0, p > 0, t, n


def gather_per_rank(value: float, device=None) -> list[float]:
    """`value` of every rank, in rank order (a collective: every rank calls it at the same point)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    values = torch.zeros(dist.get_world_size(), dtype=torch.float64, device=device)
    values[dist.get_rank()] = value
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return [round(float(v), 3) for v in values.tolist()]


# -- rank reports: ranks/rank-R.json ---------------------------------------------------------------
def rank_report_path(run_dir: str | Path, rank: int) -> Path:
    return Path(run_dir) / RANKS_DIR / f"rank-{rank}.json"


def write_rank_report(run_dir: str | Path, rank: Rank, **fields: Any) -> None:
    """This rank's report, replaced as a whole (a reader never sees half of it); fields accumulate."""
    from engine.paths import atomic_write_text

    path = rank_report_path(run_dir, rank.rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = _read_json(path) or {}
    report.update(rank=rank.rank, local_rank=rank.local_rank, world_size=rank.world_size,
                  pid=os.getpid(), host=socket.gethostname(), time=round(time.time(), 3), **fields)
    atomic_write_text(path, json.dumps(report, default=str) + "\n")


def read_rank_reports(run_dir: str | Path) -> list[dict]:
    reports = [_read_json(p) for p in sorted(Path(run_dir, RANKS_DIR).glob("rank-*.json"))]
    return sorted((r for r in reports if isinstance(r, dict) and isinstance(r.get("rank"), int)), key=lambda r: r["rank"])


def clear_rank_reports(run_dir: str | Path, ranks: Optional[range] = None) -> None:
    """Before a launch: the reports of this node's ranks (all of them when `ranks` is None) go."""
    for path in Path(run_dir, RANKS_DIR).glob("rank-*.json"):
        number = path.stem.rpartition("-")[2]
        if ranks is None or (number.isdigit() and int(number) in ranks):
            path.unlink(missing_ok=True)


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# Kinds that are a cause in themselves; anything else on a rank may be the echo of another rank's
# failure ("Connection closed by peer" when a peer died).
_CAUSES = ("oom", "input", "backend_unavailable")


def root_cause(reports: list[dict], alive=None) -> Optional[dict]:
    """The rank failure that explains the run's end, or None when every rank ended well.

    A rank that ended without a word (its report still says "running" and its process is gone) was
    killed: that is the cause, the others' errors are its echo. Otherwise an error of a kind that
    is a cause in itself (out of memory, bad input, a backend that cannot start), else the first
    error by time. Each result: the report, with "message" for the person."""
    if alive is None:
        from engine.runs.registry import pid_alive as alive
    vanished = [r for r in reports if r.get("outcome") == "running" and not alive(r.get("pid"))]
    if vanished:
        r = vanished[0]
        world = r.get("world_size") or "?"
        return dict(r, kind="killed", message=(
            f"Process rank {r['rank']} of {world} (pid {r.get('pid')} on {r.get('host')}) ended without reporting an error: "
            "it was killed (kill -9, or the system's out-of-memory killer), and the other ranks were stopped with it"))
    errors = [r for r in reports if r.get("outcome") == "error"]
    if not errors:
        return None
    errors.sort(key=lambda r: (r.get("kind") not in _CAUSES, r.get("time") or 0.0, r["rank"]))
    r = errors[0]
    same = [e for e in errors if e["rank"] < r["rank"] and e.get("kind") == r.get("kind") and _gist(e) == _gist(r)]
    if same:  # every rank failed alike (the same bad checkpoint, say): rank 0 has said it in the events already
        r = same[0]
    return dict(r, message=f"Rank {r['rank']} of {r.get('world_size') or '?'}: {r.get('message') or 'failed'}")


def _gist(report: dict) -> str:
    """An error message without the rank's own log file name."""
    return str(report.get("message") or "").split(" (details in ")[0]


def cpu_ddp_trainer(base):
    """`base` for DDP on the CPU, where resuming fails in transformers 5.17: it loads the optimizer
    state with map_location=args.device, which there is torch.device("cpu", LOCAL_RANK), and torch
    cannot map a storage to "cpu:1" ("don't know how to restore data location ... tagged with cpu:1").
    The state is loaded to the CPU instead, which is where the parameters are."""
    import torch
    from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

    class CpuDDPTrainer(base):
        def _load_optimizer_and_scheduler(self, checkpoint):
            if checkpoint is None:
                return
            optimizer, scheduler = Path(checkpoint, OPTIMIZER_NAME), Path(checkpoint, SCHEDULER_NAME)
            if not (optimizer.is_file() and scheduler.is_file()):
                return
            self.optimizer.load_state_dict(torch.load(optimizer, map_location="cpu", weights_only=True))
            self.lr_scheduler.load_state_dict(torch.load(scheduler, map_location="cpu", weights_only=True))

    CpuDDPTrainer.__name__ = f"CpuDDP{base.__name__}"
    return CpuDDPTrainer
