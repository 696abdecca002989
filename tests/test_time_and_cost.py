"""Training time and rented-GPU cost (issue 20): the FLOP count, the prices file, and `plan`'s
--train-tokens / --dataset / --epochs with `estimates.<method>.hours` / `.cost` and the cheapest GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.planner import cost, throughput
from engine.planner.architecture import inspect_model
from engine.planner.hardware import find_gpu
from engine.planner.plan import build_plan, plan_command

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "configs"
LLAMA_8B = str(CONFIGS / "llama-3.1-8b")
DEMO_DATA = ROOT / "data" / "demo" / "extract_contacts.jsonl"


@pytest.fixture()
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_TUI_STATE", str(tmp_path))
    return tmp_path


def test_flops_follow_the_method():
    info = inspect_model(LLAMA_8B)
    n = throughput.matmul_params(info)
    assert 7.0e9 < n < 8.1e9  # 8B less the input embedding (a lookup), plus the output head
    kw = dict(tokens_per_row=512, trainable_params=40_000_000)
    full = throughput.flops_per_token(info, "full", gradient_checkpointing=False, **kw)
    lora = throughput.flops_per_token(info, "lora", gradient_checkpointing=False, **kw)
    lora_gc = throughput.flops_per_token(info, "lora", gradient_checkpointing=True, **kw)
    qlora = throughput.flops_per_token(info, "qlora", gradient_checkpointing=True, tokens_per_micro_batch=2048, **kw)
    assert full == pytest.approx(6 * n, rel=0.05)  # forward 2N + backward 4N
    assert lora == pytest.approx(4 * n, rel=0.05)  # frozen weights: no weight gradients
    assert lora_gc - lora == pytest.approx(2 * n, rel=0.05)  # checkpointing: one more forward
    assert qlora > lora_gc  # dequantisation
    # ... and it is a cost per micro-batch: longer micro-batches spread it.
    assert throughput.flops_per_token(info, "qlora", tokens_per_micro_batch=8192, **kw) < qlora


def test_time_scales_with_tokens_epochs_and_the_gpu():
    info = inspect_model(LLAMA_8B)
    kw = dict(tokens_per_row=512, batch_size=4, trainable_params=40_000_000)
    one = throughput.estimate_time(info, "lora", peak_tflops=165.2, train_tokens=1_000_000, **kw)
    two = throughput.estimate_time(info, "lora", peak_tflops=165.2, train_tokens=1_000_000, epochs=2, **kw)
    h100 = throughput.estimate_time(info, "lora", peak_tflops=find_gpu("H100").peak_tflops, train_tokens=1_000_000, **kw)
    assert two.seconds == pytest.approx(2 * one.seconds)
    assert h100.seconds < one.seconds / 5
    peft = throughput.estimate_time(info, "lora", peak_tflops=165.2, train_tokens=1_000_000, backend="peft", **kw)
    assert peft.seconds > one.seconds  # Unsloth's kernels are faster


def test_calibration_point_is_met():
    """LLaMA-Factory's A100 40GB QLoRA figure (Unsloth, Llama-2-7B, 4,096 tokens): 3,413 tokens/s."""
    info = inspect_model(str(CONFIGS / "llama-2-7b"))
    from engine.planner.target_modules import count_trainable_params

    trainable = count_trainable_params(info, info.linear_modules, 8)
    estimate = throughput.estimate_time(info, "qlora", peak_tflops=find_gpu("A100 40GB").peak_tflops,
                                        train_tokens=1, tokens_per_row=4096, batch_size=1, trainable_params=trainable)
    assert estimate.tokens_per_second == pytest.approx(3413, rel=0.10)


def test_catalogue_has_peak_tflops():
    assert find_gpu("RTX 4090").peak_tflops == 165.2  # bf16 with FP32 accumulate, dense
    assert find_gpu("H100 80GB").peak_tflops == 989.4
    assert find_gpu("A100 80GB").peak_tflops == 312


@pytest.mark.parametrize("seconds, text", [
    (30, "under a minute"), (25 * 60, "about 25 min"), (100 * 60, "about 1 h 40 min"), (3600, "about 1 h"),
    (15 * 3600 + 40 * 60, "about 16 h"), (3 * 86400, "about 3.0 days"),
])
def test_about(seconds, text):
    assert throughput.about(seconds) == text


def test_shipped_prices_are_examples_with_a_date(state):
    price = cost.load_prices().for_gpu("NVIDIA GeForce RTX 4090")
    assert price.gpu == "RTX 4090" and not price.mine and price.as_of
    assert price.rate() == f"$0.69/h (example price, {price.as_of})"
    assert cost.describe("RTX 4090", 100 * 60, price).startswith("RTX 4090: about 1 h 40 min, about $1.15 at $0.69/h")


def test_the_persons_prices_win(state):
    (state / "prices.json").write_text(json.dumps({"RTX 4090": 0.5, "h100": 2.0}))
    prices = cost.load_prices()
    assert prices.for_gpu("RTX 4090").per_hour == 0.5 and prices.for_gpu("RTX 4090").mine
    assert prices.for_gpu("RTX 4090").rate() == "$0.50/h"
    assert prices.for_gpu("H100 80GB").per_hour == 2.0
    assert not prices.for_gpu("A100 80GB").mine  # the rest stay examples


@pytest.mark.parametrize("text, words", [
    ("{nope", "not valid JSON at line 1"),
    ('["RTX 4090"]', "JSON object of GPU name to hourly price"),
    ('{"RTX 4090": -1}', 'the price of "RTX 4090" must be a number'),
    ('{"Voodoo 2": 1.0}', '"Voodoo 2" is not a GPU of the catalogue'),
])
def test_a_bad_prices_file_is_one_sentence(state, text, words):
    (state / "prices.json").write_text(text)
    with pytest.raises(UserError) as caught:
        cost.load_prices()
    message = str(caught.value)
    assert words in message and "prices.json" in message and "\n" not in message
    relaxed = cost.load_prices(strict=False)  # the wizard: the examples, and the sentence to show
    assert relaxed.problem == message and relaxed.for_gpu("RTX 4090").per_hour == 0.69


def test_plan_carries_hours_cost_and_the_cheapest_gpu(state):
    plan = build_plan(LLAMA_8B, gpu="RTX 4090")
    info = inspect_model(LLAMA_8B)
    cost.add_time_and_cost(plan, info, cost.Workload(10_000_000, 2.0, 512.0))
    for method in ("full", "lora", "qlora"):
        assert plan["estimates"][method]["hours"] > 0 and plan["estimates"][method]["cost"] > 0
    lora = plan["estimates"]["lora"]
    assert lora["cost"] == pytest.approx(lora["hours"] * 0.69, abs=0.01)
    cheapest = plan["cheapest_gpu"]
    options = plan["time_and_cost"]["gpus_that_fit"]
    assert cheapest == next(o for o in options if o["cost"] is not None)
    assert all(cheapest["cost"] <= o["cost"] for o in options if o["cost"] is not None)
    assert "RTX 2060" not in [o["gpu"] for o in options]  # 6 GB: an 8B model fits no method
    text = cost.format_time_and_cost(plan)
    assert "LoRA (recommended)" in text and "RTX 4090: about" in text and "Cheapest GPU that fits" in text


def test_no_time_on_a_cpu_or_a_bare_vram_size(state):
    info = inspect_model(LLAMA_8B)
    plan = build_plan(LLAMA_8B, vram_gb=24)
    cost.add_time_and_cost(plan, info, cost.Workload(1_000_000))
    assert plan["estimates"]["lora"]["hours"] is None and "--gpu NAME" in plan["time_and_cost"]["note"]
    assert plan["cheapest_gpu"] is not None  # the catalogue is still compared


def test_plan_command_train_tokens_and_dataset(state, capsys):
    plan_command(["--model", LLAMA_8B, "--gpu", "RTX 4090", "--train-tokens", "2000000", "--epochs", "3", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert plan["time_and_cost"]["train_tokens"] == 2_000_000 and plan["time_and_cost"]["epochs"] == 3
    assert plan["estimates"]["lora"]["hours"] > 0 and plan["cheapest_gpu"]["gpu"]

    plan_command(["--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--gpu", "RTX 4090", "--dataset", str(DEMO_DATA)])
    out = capsys.readouterr().out
    assert "Training   380 rows," in out and "trained tokens" in out and "RTX 4090: " in out

    with pytest.raises(UserError, match="--epochs must be a positive number"):
        plan_command(["--model", LLAMA_8B, "--gpu", "RTX 4090", "--train-tokens", "10", "--epochs", "0"])


# -- during and after the run: the dashboard and the finish screen ------------------------------------

GPU_RUN = [
    {"event": "start", "time": 1.0, "total_steps": 100, "step": 0, "world_size": 1, "gpu": "NVIDIA GeForce RTX 4090"},
    {"event": "step", "time": 2.0, "step": 33, "total_steps": 100, "elapsed": 3600.0, "eta_seconds": 7200.0},
]


def test_run_progress_prices_the_measured_time(state):
    from engine.runs.progress import progress_of

    run = progress_of(GPU_RUN)
    assert run.gpu == "NVIDIA GeForce RTX 4090" and run.price().gpu == "RTX 4090"
    assert run.cost_so_far() == pytest.approx(0.69) and run.cost_to_finish() == pytest.approx(1.38)
    assert run.cost_short() == "$0.69 so far · $1.38 to go"
    assert run.cost_line().startswith("$0.69 so far, about $1.38 to finish at $0.69/h (example price, ")
    cpu = progress_of([{**GPU_RUN[0], "gpu": None}, GPU_RUN[1]])
    assert cpu.cost_so_far() is None and cpu.cost_short() == "-"
    two = progress_of([{**GPU_RUN[0], "world_size": 2}, GPU_RUN[1]])
    assert two.cost_so_far() == pytest.approx(1.38)  # two GPUs rented


def test_dashboard_shows_cost_so_far(state, tmp_path):
    import asyncio

    from textual.app import App
    from textual.widgets import Static

    from tui.screens.training import TrainingScreen

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in GPU_RUN))

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(TrainingScreen(run_dir, probe_system=False))

    async def body():
        app = Host()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            stats = str(app.screen.query_one("#stats", Static).render())
            assert "$0.69 · $1.38 to go" in stats and "$0.69/h*" in stats  # the short forms: one row each

    asyncio.run(body())
    # A CPU run costs nothing by the hour: no cost or price rows in the narrow panel.
    (run_dir / "events.jsonl").write_text("".join(json.dumps({**e, "gpu": None} if e.get("event") == "start" else e) + "\n"
                                                  for e in GPU_RUN))

    async def cpu_body():
        app = Host()
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            stats = str(app.screen.query_one("#stats", Static).render())
            assert "tokens/s" in stats and "cost" not in stats and "price" not in stats

    asyncio.run(cpu_body())


def test_finish_summary_has_the_total(state):
    from tui.screens.finish import _summary

    end = {"event": "end", "status": "completed", "step": 100, "train_runtime": 7200.0}
    text = _summary([*GPU_RUN, end])
    assert "about $1.38 on NVIDIA GeForce RTX 4090 at $0.69/h (example price" in text
    assert "$" not in _summary([{**GPU_RUN[0], "gpu": None}, end])
