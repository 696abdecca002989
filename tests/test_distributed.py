"""Several processes as one run (issue 17, the runtime half): torchrun, DDP and FSDP2 on this CPU.

The training tests run 2 processes with gloo (OMP_NUM_THREADS=1 each) on the demo model, a few
steps at max_seq_length 128, and share runs: one DDP run folder goes through a stop, a kill -9 of
one rank and two resumes (the last as a two-node job on localhost), one FSDP2 run, and the DDP trap
on a tiny model. The rest are quick checks of the launch, the outcome and the refusals.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.session.schema import session_from_dict
from engine.training import distributed
from engine.training.distributed import Launch, resolve_launch, root_cause, torchrun_command
from tests.conftest import DEMO_DATA, ROOT, events_of, run_cli, small_session, write_session


# Several processes that train for real: slow, so `pytest -m "not training"` leaves them out.
def trains(test):
    return pytest.mark.training(pytest.mark.distributed(test))


RUN_TIMEOUT = 420  # seconds for one launch on a loaded 2-core machine; a hang fails instead of blocking


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _replay(session_path: Path, *extra: str, log: Path) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "tui.cli", "--replay", str(session_path), *extra],
                            stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=_env())


def _wait(process: subprocess.Popen, log: Path) -> tuple[int, str]:
    try:
        code = process.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"the run hung; its output:\n{log.read_text()[-3000:]}") from None
    return code, log.read_text()


def _wait_for(condition, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"no {what} within {RUN_TIMEOUT} s:\n{log.read_text()[-3000:]}")


def _reports(run_dir: Path) -> dict[int, dict]:
    return {r["rank"]: r for r in distributed.read_rank_reports(run_dir)}


def _adapter_digest(adapter: Path) -> str:
    """The digest each rank logs of its trainable weights (engine.training.run.trainable_digest),
    computed from the adapter file rank 0 wrote."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(adapter / "adapter_model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(tmp: Path, **overrides) -> dict:
    base = dict(backend="peft", model__max_seq_length=128, training__max_steps=3, training__save_steps=1,
                training__per_device_train_batch_size=1, training__gradient_checkpointing=True,
                distributed__nproc_per_node=2, distributed__strategy="ddp")
    return small_session(tmp, **{**base, **overrides})


# -- one DDP run folder: stop, kill -9, resume, resume as two nodes ---------------------------------
@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> dict:
    """Launch 1 (2 processes, DDP) is stopped as `lora-tui stop` stops it; launch 2 resumes and has
    rank 1 killed with SIGKILL once it trains; launch 3 resumes to the end as a two-node job (two
    `--node-rank` supervisors on localhost, one process each)."""
    from engine.runs.commands import stop_command

    tmp = tmp_path_factory.mktemp("ddp")
    session_path = write_session(tmp, _session(tmp))
    run_dir = tmp / "run"
    seen: dict = {"run_dir": run_dir}

    # 1: stopped as soon as training starts: both ranks stop after step 1
    log = tmp / "launch1.log"
    process = _replay(session_path, log=log)
    _wait_for(lambda: any(e["event"] == "start" for e in events_of(run_dir)), "the start", process, log)
    stop_command([str(run_dir)])
    started = time.monotonic()
    seen["stop"] = (*_wait(process, log), time.monotonic() - started, _reports(run_dir))

    # 2: resume, then kill -9 rank 1 once training has started again
    log = tmp / "launch2.log"
    process = _replay(session_path, "--resume", log=log)
    _wait_for(lambda: sum(e["event"] == "start" for e in events_of(run_dir)) == 2, "the second start", process, log)
    time.sleep(1.0)  # into the first step: rank 0 then meets its dead peer in a collective
    victim = _reports(run_dir)[1]["pid"]
    os.kill(victim, signal.SIGKILL)
    seen["kill"] = (*_wait(process, log), victim)

    # 3: resume to the end as two nodes of one process each
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = _session(tmp, distributed__nproc_per_node=1, distributed__nnodes=2, distributed__rdzv_endpoint=endpoint)
    nodes_path = write_session(tmp, nodes, name="two-nodes.json")
    logs = [tmp / f"launch3-node{i}.log" for i in (0, 1)]
    processes = [_replay(nodes_path, "--resume", "--node-rank", str(i), log=logs[i]) for i in (0, 1)]
    seen["nodes"] = [_wait(p, log) for p, log in zip(processes, logs)]
    seen["reports"] = _reports(run_dir)
    seen["events"] = events_of(run_dir)
    return seen


@trains
def test_a_stop_stops_both_ranks_with_a_checkpoint(ddp_run):
    code, output, seconds, reports = ddp_run["stop"]
    assert code == 130, output[-2000:]  # EXIT_STOPPED
    events = ddp_run["events"]
    first_end = next(e for e in events if e["event"] == "end")
    assert first_end["status"] == "stopped" and Path(first_end["checkpoint"]).is_dir()
    assert {r["outcome"] for r in reports.values()} == {"ok"}
    assert reports[0]["step"] == reports[1]["step"] == first_end["step"]  # both ranks stopped at the same step
    assert reports[0]["trainable_sha256"] == reports[1]["trainable_sha256"]
    assert seconds < 120, "the stop took too long: a rank was left waiting"


@trains
def test_kill_9_of_one_rank_is_a_clear_error_and_the_run_resumes(ddp_run):
    code, output, victim = ddp_run["kill"]
    assert code == 1, output[-2000:]
    events = ddp_run["events"]
    second_start = [i for i, e in enumerate(events) if e["event"] == "start"][1]
    third_start = [i for i, e in enumerate(events) if e["event"] == "start"][2]
    errors = [e for e in events[second_start:third_start] if e["event"] == "error"]
    assert len(errors) == 1, errors  # the cause, not rank 0's echo ("Connection reset by peer")
    last = errors[-1]
    assert last["rank"] == 1 and last["kind"] == "killed", errors
    assert f"pid {victim}" in last["message"] and "--resume" in last["message"]
    assert last["message"] in output  # the replay's one-line error is the event's
    assert events[third_start]["resume_from"], "the last launch did not resume from a checkpoint"


@trains
def test_ddp_replay_gives_one_adapter_one_event_stream_and_equal_weights(ddp_run):
    run_dir, events = ddp_run["run_dir"], ddp_run["events"]
    for code, output in ddp_run["nodes"]:
        assert code == 0, output[-3000:]
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 3  # one per launch, however many ranks
    assert all(e["world_size"] == 2 and e["strategy"] == "ddp" for e in starts)
    assert [e["status"] for e in events if e["event"] == "end"] == ["stopped", "completed"]
    assert events[-1]["event"] == "end" and events[-1]["step"] == 3
    # One adapter, written by rank 0 only, equal to what every rank trained.
    assert sorted(p.name for p in run_dir.glob("adapter*")) == ["adapter"]
    reports = ddp_run["reports"]
    assert sorted(reports) == [0, 1] and {r["outcome"] for r in reports.values()} == {"ok"}
    assert reports[0]["trainable_sha256"] == reports[1]["trainable_sha256"] == _adapter_digest(run_dir / "adapter")
    assert not list(run_dir.glob("worker-rank-0*")) and (run_dir / "worker-rank-1.log").is_file()


@trains
def test_two_node_ranks_on_localhost_form_one_job(ddp_run):
    (code0, output0), (code1, output1) = ddp_run["nodes"]
    assert "2 processes, 1 on each of 2 nodes (DDP)" in output0 and "this is node 0" in output0
    assert "this is node 1" in output1 and code1 == 0
    run_dir = ddp_run["run_dir"]
    assert (run_dir / "worker-node-1.log").is_file()  # node 1's torchrun output, apart from node 0's
    assert json.loads((run_dir / "session.json").read_text())["distributed"]["node_rank"] == 0


@trains
def test_throughput_and_memory_are_the_whole_jobs(ddp_run):
    events = ddp_run["events"]
    last_start = [i for i, e in enumerate(events) if e["event"] == "start"][-1]
    steps = [e for e in events[last_start:] if e["event"] == "step"]
    done = steps[-1]["step"] - events[last_start]["step"]
    assert steps[-1]["samples"] == 2 * done  # batch 1 on each of 2 ranks: the samples of both
    logs = [e for e in events if e["event"] == "log"]
    assert all(len(e["memory_gb_ranks"]) == 2 and e["memory_gb"] == max(e["memory_gb_ranks"]) for e in logs)


# -- FSDP2 ------------------------------------------------------------------------------------------
@trains
def test_fsdp2_holds_half_the_parameters_per_rank_and_trains(tmp_path):
    session = _session(tmp_path, distributed__strategy="fsdp", training__max_steps=1)
    log = tmp_path / "replay.log"
    code, output = _wait(_replay(write_session(tmp_path, session), log=log), log)
    assert code == 0, output[-3000:]
    run_dir = tmp_path / "run"
    reports = _reports(run_dir)
    assert sorted(reports) == [0, 1]
    for report in reports.values():
        assert report["outcome"] == "ok" and report["strategy"] == "fsdp"
        assert abs(report["params_held"] / report["params_total"] - 0.5) < 0.01, report
    assert reports[0]["trainable_sha256"] != reports[1]["trainable_sha256"]  # each holds its own shards
    events = events_of(run_dir)
    assert [e["world_size"] for e in events if e["event"] == "start"] == [2]
    losses = [e["loss"] for e in events if e["event"] == "log"]
    assert len(losses) == 1 and all(isinstance(x, float) for x in losses)
    from safetensors.torch import load_file

    adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any(name.endswith("lora_B.weight") and value.abs().sum() > 0 for name, value in adapter.items())  # trained
    assert (run_dir / "checkpoint-1" / "optimizer.pt").is_file()  # the full optimizer state, for --resume


@trains
def test_qlora_fsdp2_with_cpu_offload_trains(tmp_path):
    """The 70B-on-two-24-GB-cards recipe, QLoRA + FSDP2 + CPU offload, on the demo model: the session's
    backend "auto" runs it on the peft backend (Unsloth refuses 4-bit FSDP2 on the CPU), the packed
    4-bit weights stored in the compute dtype (bnb_4bit_quant_storage) and sharded like the rest, half
    the parameter elements a rank, FSDP2's CPUOffloadPolicy on every fully_shard (unpinned on the CPU,
    where gloo carries the collectives), two steps trained, one adapter. On the CPU nothing moves, so
    this checks the code path, not the memory (benchmarks/gpu_check.sh measures that on a GPU)."""
    session = _session(tmp_path, backend="auto", method="qlora", distributed__strategy="fsdp",
                       distributed__cpu_offload=True, training__max_steps=2)
    log = tmp_path / "replay.log"
    code, output = _wait(_replay(write_session(tmp_path, session), log=log), log)
    assert code == 0, output[-3000:]
    run_dir = tmp_path / "run"
    reports = _reports(run_dir)
    assert sorted(reports) == [0, 1]
    for report in reports.values():
        assert report["outcome"] == "ok" and report["strategy"] == "fsdp" and report["cpu_offload"] is True, report
        assert abs(report["params_held"] / report["params_total"] - 0.5) < 0.01, report
    events = events_of(run_dir)
    assert [e["world_size"] for e in events if e["event"] == "start"] == [2]
    assert not [e for e in events if e["event"] == "fallback"]  # peft from the start, not after Unsloth failed
    model = next(e for e in events if e["event"] == "model")
    assert model["quantized_modules"] > 0 and model["bnb_4bit_quant_storage"] == "float32"  # the CPU's compute dtype
    losses = [e["loss"] for e in events if e["event"] == "log" and e.get("loss") is not None]
    assert losses and all(0 < loss < 10 for loss in losses)
    assert [e["event"] for e in events][-1] == "end" and events[-1]["status"] == "completed"
    from safetensors.torch import load_file

    adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any(name.endswith("lora_B.weight") and value.abs().sum() > 0 for name, value in adapter.items())  # trained
    assert (run_dir / "checkpoint-2" / "optimizer.pt").is_file()


# -- the DDP trap, on a tiny model --------------------------------------------------------------------
@trains
def test_lora_ddp_reentrant_checkpointing_trap_and_its_fix(tmp_path):
    """LoRA + DDP + reentrant gradient checkpointing fails ("marked as ready twice") when DDP looks
    for unused parameters, as transformers asks for a PEFT model; the arguments a distributed run
    gets from engine.training.args train it, with both ranks' weights identical."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tests" / "ddp_trap_worker.py"), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=ROOT, env=_env())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    seen = [json.loads((tmp_path / f"trap-rank-{rank}.json").read_text()) for rank in (0, 1)]
    for rank in seen:
        assert not rank["trap"]["ok"] and rank["trap"]["ready_twice"], rank["trap"]
        assert rank["ours"]["ok"] and rank["ours"]["find_unused"] is False and rank["ours"]["ddp_backend"] == "gloo"
    assert seen[0]["ours"]["sha256"] == seen[1]["ours"]["sha256"]


@trains
def test_qlora_sharded_by_fsdp2_matches_the_unsharded_model(tmp_path):
    """The 4-bit weights sharded by engine.training.fsdp.shard_model: each rank holds half of the packed
    weights, and the logits and adapter gradients equal the unsharded 4-bit model's exactly."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tests" / "fsdp_qlora_worker.py"), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=ROOT, env=_env())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"qlora-rank-{rank}.json").read_text())
        assert seen["logits_diff"] == 0.0 and seen["grads_diff"] == 0.0, seen
        assert seen["packed_dtype"] == "torch.float32"  # bnb_4bit_quant_storage: eight 4-bit weights an fp32
        assert seen["packed_local"][0] * 2 == seen["packed_whole"][0] and abs(seen["held"] / seen["total"] - 0.5) < 0.01


# -- quick checks: no training ---------------------------------------------------------------------
def _s(**distributed_section):
    return session_from_dict({"dataset": {"path": str(DEMO_DATA)}, "distributed": distributed_section})


def test_old_sessions_mean_one_process():
    launch = resolve_launch(session_from_dict({"dataset": {"path": "d.jsonl"}}), gpus=4)
    assert (launch.world_size, launch.strategy, launch.distributed) == (1, "none", False)


def test_auto_means_every_visible_gpu_and_one_process_on_the_cpu():
    assert resolve_launch(_s(nproc_per_node="auto"), gpus=4) == Launch(4, 1, 0, None, "ddp")
    assert resolve_launch(_s(nproc_per_node="auto"), gpus=0).world_size == 1
    assert resolve_launch(_s(nproc_per_node=2, strategy="fsdp"), gpus=0).strategy == "fsdp"  # CPU processes (gloo)
    assert resolve_launch(_s(nproc_per_node=2, strategy="fsdp"), gpus=2).world_size == 2
    with pytest.raises(Exception, match="this node has 2 visible GPU"):
        resolve_launch(_s(nproc_per_node=4), gpus=2)


def test_the_torchrun_commands():
    one = torchrun_command(Launch(2, 1, 0, None, "ddp"), ["RUN", "--backend", "peft"], python="py")
    assert one == ["py", "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                   "-m", "engine.training.worker", "RUN", "--backend", "peft"]
    two = torchrun_command(Launch(8, 2, 1, "10.0.0.1:29500", "fsdp"), ["RUN"], python="py")
    assert two[3:13] == ["--nproc_per_node", "8", "--nnodes", "2", "--node_rank", "1",
                         "--rdzv_endpoint", "10.0.0.1:29500", "--rdzv_backend", "static"]
    session = _s(nproc_per_node=8, nnodes=2, rdzv_endpoint="10.0.0.1:29500")
    assert distributed.node_commands(session, "s.json") == ["lora-tui --replay s.json --node-rank 0",
                                                            "lora-tui --replay s.json --node-rank 1"]


def test_the_supervisor_starts_unsloth_fsdp_with_its_own_switch(tmp_path):
    from engine.training.supervisor import Supervisor

    session = _s(nproc_per_node=2, strategy="fsdp")
    supervisor = Supervisor(session, tmp_path, tmp_path / "s.json", print, launch=resolve_launch(session, gpus=0))
    command, env, log = supervisor.worker_command("unsloth", resume=True)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert command[-8:] == ["-m", "engine.training.worker", str(tmp_path), "--backend", "unsloth", "--resume", "--strategy", "fsdp"]
    assert env["UNSLOTH_FSDP2"] == "1" and log == "worker.log"
    command, env, _ = supervisor.worker_command("peft", resume=False)
    assert "UNSLOTH_FSDP2" not in env or env["UNSLOTH_FSDP2"] == os.environ.get("UNSLOTH_FSDP2")
    one = Supervisor(_s(), tmp_path, tmp_path / "s.json", print, launch=resolve_launch(_s(), gpus=0))
    assert one.worker_command("peft", resume=False)[0][1:3] == ["-m", "engine.training.worker"]


def test_qlora_with_fsdp_runs_on_peft_and_unsloth_is_refused_on_the_cpu(tmp_path):
    """QLoRA + FSDP: both backends on GPUs; on the CPU only peft (Unsloth's FSDP2 refuses 4-bit there),
    which "auto" picks from the start; backend "unsloth" is one sentence before anything is written."""
    session = session_from_dict({"dataset": {"path": str(DEMO_DATA)}, "method": "qlora", "backend": "auto",
                                 "distributed": {"nproc_per_node": 2, "strategy": "fsdp"}})
    launch = resolve_launch(session, gpus=2)
    for backend in ("unsloth", "peft"):
        distributed.check_strategy(session, launch, backend, on_gpu=True)
    distributed.check_strategy(session, launch, "peft", on_gpu=False)
    assert distributed.first_backend(session, launch, on_gpu=False) == "peft"
    assert distributed.first_backend(session, launch, on_gpu=True) == "unsloth"
    with pytest.raises(Exception, match="peft backend only"):
        distributed.check_strategy(session, launch, "unsloth", on_gpu=False)
    data = small_session(tmp_path, method="qlora", backend="unsloth", distributed__nproc_per_node=2,
                         distributed__strategy="fsdp")
    result = run_cli("--replay", str(write_session(tmp_path, data)), timeout=120)
    assert result.returncode == 2 and "peft backend only" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before anything was written
    from engine.training.preflight import PreflightReport, _check_processes

    report = PreflightReport()
    _check_processes(session_from_dict(data), report)  # what --dry-run says about it
    assert report.lines == ["Processes: 2 processes on this node (FSDP) through torchrun"]
    assert len(report.problems) == 1 and "peft backend only" in report.problems[0]
    report = PreflightReport()
    _check_processes(session, report)  # "auto": runs, on peft, and says so
    assert not report.problems and report.lines[-1].startswith("Backend: auto runs peft here")


def test_node_rank_is_checked_and_goes_with_replay(tmp_path):
    data = small_session(tmp_path, distributed__nnodes=2, distributed__rdzv_endpoint="127.0.0.1:29500")
    result = run_cli("--replay", str(write_session(tmp_path, data)), "--node-rank", "2", timeout=120)
    assert result.returncode == 2 and "numbered 0 to 1" in result.stderr
    result = run_cli("--node-rank", "1", timeout=120)
    assert result.returncode == 2 and "go with --replay" in result.stderr


def test_the_cause_is_the_killed_rank_not_its_echoes():
    reports = [
        {"rank": 0, "outcome": "error", "kind": "crash", "message": "Training failed: Connection closed by peer",
         "time": 2.0, "world_size": 2},
        {"rank": 1, "outcome": "running", "pid": 111, "host": "h", "time": 1.0, "world_size": 2},
    ]
    cause = root_cause(reports, alive=lambda pid: False)
    assert cause["rank"] == 1 and cause["kind"] == "killed" and "pid 111" in cause["message"]
    oom = [dict(reports[0], time=1.0), {"rank": 1, "outcome": "error", "kind": "oom", "message": "CUDA out of memory",
                                       "time": 3.0, "world_size": 2}]
    assert root_cause(oom)["rank"] == 1  # a cause in itself wins over an earlier echo
    assert root_cause([{"rank": 0, "outcome": "ok"}, {"rank": 1, "outcome": "ok"}]) is None


def test_distributed_arguments_for_the_trainer(tmp_path):
    from engine.training.args import sft_config_kwargs

    session = _s(nproc_per_node=2)
    cpu = sft_config_kwargs(session, tmp_path, has_eval=False, on_gpu=False, bf16_ok=False, train_rows=100, world_size=2)
    assert cpu["ddp_find_unused_parameters"] is False and cpu["ddp_backend"] == "gloo" and cpu["use_cpu"]
    assert "fsdp" not in cpu and "fsdp_config" not in cpu  # they would silently run DDP on the CPU
    gpu = sft_config_kwargs(session, tmp_path, has_eval=False, on_gpu=True, bf16_ok=True, train_rows=100, world_size=2)
    assert gpu["ddp_find_unused_parameters"] is False and "ddp_backend" not in gpu  # NCCL, the default
    one = sft_config_kwargs(session, tmp_path, has_eval=False, on_gpu=False, bf16_ok=False, train_rows=100)
    assert "ddp_find_unused_parameters" not in one


# -- FSDP's CPU offload (distributed.cpu_offload) ----------------------------------------------------
def test_cpu_offload_is_off_in_old_sessions_and_a_strict_bool():
    assert session_from_dict({"dataset": {"path": "d.jsonl"}}).distributed.cpu_offload is False
    assert _s(strategy="fsdp", nproc_per_node=2).distributed.cpu_offload is False  # a section without the key
    on = _s(strategy="fsdp", nproc_per_node=2, cpu_offload=True)
    assert session_from_dict(json.loads(on.to_json())).distributed.cpu_offload is True
    with pytest.raises(Exception, match="cpu_offload"):
        _s(strategy="fsdp", nproc_per_node=2, cpu_offload="yes")


def test_cpu_offload_needs_fsdp_over_several_processes(tmp_path):
    for section, words in (({"strategy": "ddp", "nproc_per_node": 2}, 'needs distributed.strategy "fsdp" (this session has "ddp")'),
                           ({"strategy": "auto", "nproc_per_node": 2}, 'this session has "auto"'),
                           ({"strategy": "fsdp", "nproc_per_node": 1}, "this session starts one")):
        session = _s(**section, cpu_offload=True)
        for backend in ("peft", "unsloth"):
            with pytest.raises(Exception, match=re.escape(words)):
                distributed.check_strategy(session, resolve_launch(session, gpus=2), backend, on_gpu=True)
    session = _s(strategy="fsdp", nproc_per_node=2, cpu_offload=True)
    for backend in ("peft", "unsloth"):  # both backends run it: FSDP2's CPUOffloadPolicy, Unsloth's own switch
        distributed.check_strategy(session, resolve_launch(session, gpus=2), backend, on_gpu=True)
        distributed.check_strategy(session, resolve_launch(session, gpus=0), backend, on_gpu=False)
    from engine.training.preflight import PreflightReport, _check_processes

    report = PreflightReport()
    _check_processes(session, report)
    assert report.lines == ["Processes: 2 processes on this node (FSDP) through torchrun, shards in RAM (CPU offload)"]
    assert report.problems == []
    report = PreflightReport()
    _check_processes(_s(strategy="none", cpu_offload=True), report)  # one process: still said, before training
    assert report.lines == [] and len(report.problems) == 1 and 'needs distributed.strategy "fsdp"' in report.problems[0]
    data = small_session(tmp_path, backend="peft", distributed__nproc_per_node=2, distributed__strategy="ddp",
                         distributed__cpu_offload=True)
    result = run_cli("--replay", str(write_session(tmp_path, data)), timeout=120)
    assert result.returncode == 2 and 'needs distributed.strategy "fsdp"' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_cpu_offload_reaches_unsloth_as_its_own_switch(tmp_path):
    from engine.training.supervisor import Supervisor

    session = _s(nproc_per_node=2, strategy="fsdp", cpu_offload=True)
    supervisor = Supervisor(session, tmp_path, tmp_path / "s.json", print, launch=resolve_launch(session, gpus=0))
    _, env, _ = supervisor.worker_command("unsloth", resume=False)
    assert env["UNSLOTH_FSDP2"] == "1" and env["UNSLOTH_FSDP2_CPU_OFFLOAD"] == "1"
    _, env, _ = supervisor.worker_command("peft", resume=False)  # the worker shards it itself (engine.training.fsdp)
    assert env.get("UNSLOTH_FSDP2_CPU_OFFLOAD") == os.environ.get("UNSLOTH_FSDP2_CPU_OFFLOAD")
    plain = _s(nproc_per_node=2, strategy="fsdp")
    _, env, _ = Supervisor(plain, tmp_path, tmp_path / "s.json", print,
                           launch=resolve_launch(plain, gpus=0)).worker_command("unsloth", resume=False)
    assert env.get("UNSLOTH_FSDP2_CPU_OFFLOAD") == os.environ.get("UNSLOTH_FSDP2_CPU_OFFLOAD")


def test_cpu_offload_steps_the_optimizer_in_32_bit_on_a_gpu(tmp_path):
    """The offloaded shards are CPU tensors: bitsandbytes' 8-bit optimizers (CUDA) cannot step them."""
    from engine.training.args import sft_config_kwargs

    def optim(**section):
        session = session_from_dict({"dataset": {"path": str(DEMO_DATA)}, "training": {"optim": "adamw_8bit"},
                                     "distributed": {"nproc_per_node": 2, "strategy": "fsdp", **section}})
        return sft_config_kwargs(session, tmp_path, has_eval=False, on_gpu=True, bf16_ok=True, train_rows=100,
                                 world_size=2)["optim"]

    assert optim(cpu_offload=True) == "adamw_torch"
    assert optim() == "adamw_8bit"


def test_oom_retry_keeps_the_global_effective_batch():
    from engine.troubleshooting.oom import remedies_for

    session = session_from_dict({"dataset": {"path": str(DEMO_DATA)}, "training": {"per_device_train_batch_size": 8,
                                 "gradient_accumulation_steps": 2}, "distributed": {"nproc_per_node": 4}})
    halve = next(r for r in remedies_for(session) if r["id"] == "halve_batch")
    changed = session.with_changes(halve["changes"])
    world = resolve_launch(changed, gpus=4).world_size
    assert world == 4 and changed.distributed == session.distributed
    assert changed.effective_batch_size * world == session.effective_batch_size * 4 == 64


def test_review_prints_the_command_of_every_node(tmp_path, monkeypatch):
    import asyncio

    from tui_helpers import CPU_ONLY, isolate, screen_text, settle

    from engine.session.draft import WizardDraft, new_session

    isolate(monkeypatch, tmp_path, hardware=CPU_ONLY)
    session = new_session(dataset=str(DEMO_DATA)).with_changes(
        {"distributed": {"nproc_per_node": 8, "nnodes": 2, "rdzv_endpoint": "10.0.0.1:29500"}})

    async def review():
        from tui.app import LoraTuiApp

        app = LoraTuiApp(WizardDraft(session, step="review"), autosave=False)
        async with app.run_test(size=(160, 50)) as pilot:
            await settle(pilot)
            return screen_text(app)

    text = asyncio.run(review())
    assert "node 0: lora-tui --replay" in text and "--node-rank 0" in text
    assert "node 1: lora-tui --replay" in text and "--node-rank 1" in text and "10.0.0.1:29500" in text


def test_an_out_of_memory_rank_other_than_0_becomes_the_runs_finding_and_error(tmp_path):
    """torchrun exits 1 whatever happened: the supervisor finds the rank that ran out of memory in
    the reports and writes its finding (with remedies) and error, so the OOM retry can follow."""
    from engine.runs.events import read_events
    from engine.training.distributed import Rank, write_rank_report
    from engine.training.exit_codes import WorkerExit
    from engine.training.supervisor import Supervisor

    session = _s(nproc_per_node=2)
    supervisor = Supervisor(session, tmp_path, tmp_path / "s.json", print, launch=resolve_launch(session, gpus=0))
    write_rank_report(tmp_path, Rank(0, 0, 2), outcome="error", kind="crash", message="Training failed: Connection reset by peer")
    write_rank_report(tmp_path, Rank(1, 1, 2), outcome="error", kind="oom", step=3,
                      message="Out of memory: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    code, last = supervisor._outcome_of_ranks(1, {})
    assert code == WorkerExit.OOM
    finding, error = read_events(tmp_path)
    assert finding["event"] == "finding" and finding["kind"] == "oom" and finding["rank"] == 1 and finding["remedies"]
    assert error == last and error["rank"] == 1 and error["kind"] == "oom" and "Rank 1 of 2" in error["message"]
