"""What a run costs on a rented GPU, and which GPU that fits is cheapest.

Prices are hourly, per GPU. The shipped ones (presets/prices.json) are EXAMPLES with their date,
never live quotes, and say so wherever they are shown. A person sets their own in the state
folder's `prices.json` (`~/.local/state/lora-tui/prices.json`): `{"RTX 4090": 0.59}`, GPU names as
`--gpu` takes them (catalogue names, NVML names, aliases); optionally `"currency": "€"`. Theirs win.
A bad file is one sentence (UserError) naming it and what would be right.

The time comes from engine.planner.throughput; this module only multiplies and compares.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.paths import PRESETS_DIR, state_dir
from engine.planner import throughput

PRICES_FILE = "prices.json"


@dataclass(frozen=True)
class Price:
    gpu: str  # the catalogue name
    per_hour: float
    currency: str = "$"
    mine: bool = False  # set by the person (else a shipped example)
    as_of: str = ""

    def rate(self, mark_example: bool = True) -> str:
        """'$0.69/h', with '(example price, 2025-06)' for a shipped one (unless said once elsewhere)."""
        text = f"{money(self.per_hour, self.currency)}/h"
        return text if self.mine or not mark_example else f"{text} (example price, {self.as_of})" if self.as_of else f"{text} (example price)"


@dataclass(frozen=True)
class PriceList:
    prices: dict  # catalogue name -> Price
    problem: str = ""  # one sentence when the person's file could not be used

    def for_gpu(self, name: str | None) -> Price | None:
        spec = catalogue_gpu(name)
        return self.prices.get(spec.name) if spec is not None else None


def prices_path() -> Path:
    return state_dir() / PRICES_FILE


def load_prices(path: Path | None = None, *, strict: bool = True) -> PriceList:
    """The shipped example prices, overridden by the person's `prices.json`. A bad file raises
    UserError (strict: the command line) or comes back as `problem` with the examples only (the TUI)."""
    shipped = json.loads((PRESETS_DIR / PRICES_FILE).read_text(encoding="utf-8"))
    currency, as_of = shipped.get("currency", "$"), shipped.get("as_of", "")
    prices = {}
    for name, value in shipped["usd_per_hour"].items():
        spec = catalogue_gpu(name)
        if spec is not None:
            prices[spec.name] = Price(spec.name, float(value), currency, False, as_of)
    try:
        mine = _read_mine(Path(path) if path is not None else prices_path())
    except UserError as error:
        if strict:
            raise
        return PriceList(prices, str(error))
    if mine:
        symbol = mine.pop("currency", None) or currency
        if symbol != currency:  # another currency: the examples (dollars) would mix with it
            prices = {}
        for name, value in mine.items():
            spec = catalogue_gpu(name)
            prices[spec.name] = Price(spec.name, float(value), symbol, True, "")
    return PriceList(prices)


def _read_mine(path: Path) -> dict:
    example = 'e.g. {"RTX 4090": 0.59, "H100 80GB": 2.25}'
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the prices ({error.__class__.__name__}).") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON at line {error.lineno}; prices are {example}.") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: prices are a JSON object of GPU name to hourly price, {example}.")
    checked = {}
    for key, value in data.items():
        if key == "currency":
            if not isinstance(value, str) or not 0 < len(value.strip()) <= 4:
                raise UserError(f'{path}: "currency" must be a short symbol such as "$" or "€", not {value!r}.')
            checked[key] = value.strip()
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UserError(f'{path}: the price of "{key}" must be a number of money an hour, e.g. 0.69, not {value!r}.')
        if catalogue_gpu(key) is None:
            raise UserError(f'{path}: "{key}" is not a GPU of the catalogue; use a name `lora-tui plan --gpu` takes, e.g. "RTX 4090".')
        checked[key] = float(value)
    return checked


def catalogue_gpu(name: str | None):
    """The catalogue's entry for a GPU name (an NVML name such as \"NVIDIA GeForce RTX 4090\" too), or None."""
    if not name:
        return None
    from engine.planner.hardware import find_gpu

    try:
        return find_gpu(name)
    except UserError:
        return None


def money(amount: float, currency: str = "$") -> str:
    if amount < 0.01:
        return f"under {currency}0.01"
    if amount < 100:
        return f"{currency}{amount:,.2f}"
    return f"{currency}{amount:,.0f}"


def cost_of(seconds: float, price: Price | None, num_gpus: int = 1) -> float | None:
    if price is None or seconds is None or not math.isfinite(seconds):
        return None
    return seconds / 3600 * price.per_hour * max(num_gpus, 1)


def describe(gpu: str, seconds: float, price: Price | None, num_gpus: int = 1, mark_example: bool = True) -> str:
    """'RTX 4090: about 1 h 40 min, about $1.20 at $0.69/h (example price, 2025-06)'."""
    count = f"{num_gpus} x " if num_gpus > 1 else ""
    text = f"{count}{gpu}: {throughput.about(seconds)}"
    cost = cost_of(seconds, price, num_gpus)
    if cost is not None:
        amount = money(cost, price.currency)
        text += f", {amount if amount.startswith('under') else 'about ' + amount} at {price.rate(mark_example)}"
    return text


# -- the GPUs that fit, by cost ---------------------------------------------------------------------


@dataclass(frozen=True)
class GPUOption:
    gpu: str
    method: str
    per_device_train_batch_size: int
    seconds: float
    price: Price | None

    @property
    def cost(self) -> float | None:
        return cost_of(self.seconds, self.price)

    def describe(self, mark_example: bool = True) -> str:
        return describe(self.gpu, self.seconds, self.price, mark_example=mark_example)

    def to_dict(self) -> dict:
        return {"gpu": self.gpu, "method": self.method, "per_device_train_batch_size": self.per_device_train_batch_size,
                "hours": round(self.seconds / 3600, 3), "cost": _rounded(self.cost),
                "price_per_hour": self.price.per_hour if self.price else None,
                "example_price": (not self.price.mine) if self.price else None}


def gpus_that_fit(info, workload: Workload, *, seq_len: int, batch: int, backend: str = "auto", r: int = 16,
                  gradient_accumulation_steps: int = 4, prices: PriceList | None = None) -> list[GPUOption]:
    """Every catalogue GPU (with a peak figure) on which the recommendation finds a method that fits,
    with its time and cost; cheapest first (GPUs without a price last, fastest first among them)."""
    from engine.planner.hardware import load_gpu_catalogue
    from engine.planner.recommend import recommend
    from engine.planner.target_modules import count_trainable_params

    prices = prices if prices is not None else load_prices(strict=False)
    options = []
    for spec in load_gpu_catalogue():
        if not spec.peak_tflops:
            continue
        rec = recommend(info, spec.vram_gb, seq_len=seq_len, batch_size=batch, backend=backend, r=r,
                        gradient_accumulation_steps=gradient_accumulation_steps)
        if rec.method is None:
            continue
        trainable = count_trainable_params(info, rec.target_modules, rec.r) if rec.method != "full" else 0
        estimate = workload.time(info, rec.method, peak_tflops=spec.peak_tflops, batch=rec.per_device_train_batch_size,
                                 trainable_params=trainable, gradient_checkpointing=bool(rec.gradient_checkpointing),
                                 backend=rec.backend or backend)
        options.append(GPUOption(spec.name, rec.method, rec.per_device_train_batch_size, estimate.seconds,
                                 prices.for_gpu(spec.name)))
    return sorted(options, key=lambda o: (o.cost is None, o.cost if o.cost is not None else o.seconds, o.seconds))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass(frozen=True)
class Workload:
    """What is trained: tokens a epoch (after truncation), epochs, and the average row's length."""

    train_tokens: int
    epochs: float = 1.0
    tokens_per_row: float = 512.0
    rows: int | None = None
    source: str = ""  # "--train-tokens" or the dataset's path

    def time(self, info, method: str, *, peak_tflops: float, batch: int, trainable_params: int,
             gradient_checkpointing: bool = True, backend: str = "auto", num_gpus: int = 1):
        return throughput.estimate_time(
            info, method, peak_tflops=peak_tflops, train_tokens=self.train_tokens, epochs=self.epochs,
            tokens_per_row=self.tokens_per_row, batch_size=batch, trainable_params=trainable_params,
            gradient_checkpointing=gradient_checkpointing, backend=backend, num_gpus=num_gpus,
        )

    def describe(self) -> str:
        rows = f"{self.rows:,} rows, " if self.rows else ""
        epochs = f" x {self.epochs:g} epochs" if self.epochs != 1 else ""
        return f"{rows}{self.train_tokens:,} trained tokens{epochs} (about {self.tokens_per_row:,.0f} a row)"


def dataset_workload(path: str, tokenizer_name: str, *, max_seq_length: int, epochs: float = 1.0,
                     eval_fraction: float = 0.05) -> Workload:
    """Count a dataset's trained tokens with a model's tokenizer, as a run would (rendered, truncated,
    the eval split left out): engine.data.prepare_dataset, the training worker's own code."""
    from engine.data import prepare_dataset
    from engine.models import load_tokenizer
    from engine.session.schema import DatasetSection

    tokenizer = load_tokenizer(tokenizer_name)
    data = prepare_dataset(DatasetSection(path=str(Path(path).expanduser().absolute()), eval_fraction=eval_fraction),
                           tokenizer, max_seq_length)
    # flatten_indices: a split is a view (an index mapping) over the whole table.
    lengths = data.train.flatten_indices().data.column("input_ids").to_pylist()
    total = sum(len(ids) for ids in lengths)
    return Workload(total, epochs, total / max(len(lengths), 1), len(lengths), str(path))


# -- `lora-tui plan`: time and cost in the plan ------------------------------------------------------


def add_time_and_cost(plan: dict, info, workload: Workload, prices: PriceList | None = None) -> dict:
    """Adds `estimates.<method>.hours` / `.cost`, `time_and_cost` (the workload, the price, the GPUs
    that fit cheapest first) and `cheapest_gpu` to a plan from engine.planner.plan.build_plan."""
    from engine.planner.target_modules import count_trainable_params

    prices = prices if prices is not None else load_prices()
    settings, hardware = plan["settings"], plan["hardware"]
    spec = catalogue_gpu(hardware.get("gpu"))
    price = prices.for_gpu(hardware.get("gpu"))
    num_gpus = int(hardware.get("world_size") or 1)  # plan --num-gpus N [--nodes M]: every GPU rented
    section = {"train_tokens": workload.train_tokens, "epochs": workload.epochs,
               "tokens_per_row": round(workload.tokens_per_row, 1), "rows": workload.rows, "source": workload.source,
               "gpu": spec.name if spec else hardware.get("gpu"), "peak_tflops": spec.peak_tflops if spec else None,
               "price_per_hour": price.per_hour if price else None, "currency": price.currency if price else None,
               "example_price": (not price.mine) if price else None, "price_as_of": price.as_of if price else None,
               "num_gpus": num_gpus, "note": ""}
    if hardware.get("device") == "cpu":
        section["note"] = "No estimate on a CPU; plan for a GPU with --gpu NAME for time and cost."
    elif spec is None or not spec.peak_tflops:
        section["note"] = "The GPU is not in the catalogue (--vram alone): give --gpu NAME for time and cost."
    for method, estimate in plan["estimates"].items():
        estimate["hours"] = estimate["cost"] = None
        if section["note"]:
            continue
        trainable = count_trainable_params(info, plan["target_modules"]["recommended"], settings["r"]) if method != "full" else 0
        timed = workload.time(info, method, peak_tflops=spec.peak_tflops, batch=settings["per_device_train_batch_size"],
                              trainable_params=trainable, gradient_checkpointing=bool(settings["gradient_checkpointing"]),
                              backend=settings["backend"], num_gpus=num_gpus)
        estimate["hours"] = round(timed.hours, 3)
        estimate["cost"] = _rounded(cost_of(timed.seconds, price, num_gpus))
        estimate["tokens_per_second"] = round(timed.tokens_per_second)
    options = gpus_that_fit(info, workload, seq_len=settings["seq_len"], batch=settings["per_device_train_batch_size"],
                            backend=settings.get("backend_option", "auto"), r=settings["r"],
                            gradient_accumulation_steps=settings["gradient_accumulation_steps"], prices=prices)
    section["gpus_that_fit"] = [option.to_dict() for option in options]
    cheapest = next((o for o in options if o.cost is not None), None)
    plan["cheapest_gpu"] = cheapest.to_dict() if cheapest else None
    plan["time_and_cost"] = section
    return plan


def format_time_and_cost(plan: dict) -> str:
    """The plan's time and cost lines for `format_plan`'s table ('' without a workload)."""
    section = plan.get("time_and_cost")
    if not section:
        return ""
    from engine.planner.plan import METHOD_NAMES

    lines = ["", f"Training   {Workload(section['train_tokens'], section['epochs'], section['tokens_per_row'], section['rows']).describe()}"]
    if section["note"]:
        lines.append(f"           {section['note']}")
    else:
        price = None
        if section["price_per_hour"] is not None:
            price = Price(section["gpu"], section["price_per_hour"], section["currency"], not section["example_price"],
                          section["price_as_of"] or "")
        rec = plan["recommendation"]["method"]
        for method, estimate in plan["estimates"].items():
            if estimate.get("hours") is None:
                continue
            mark = " (recommended)" if method == rec else "" if estimate.get("fits", True) else " (does not fit)"
            lines.append(f"  {METHOD_NAMES[method] + mark:<34}"
                         f"{describe(section['gpu'], estimate['hours'] * 3600, price, section.get('num_gpus') or 1)}")
        if price is None:
            lines.append(f"           no price for {section['gpu']}: set one in {prices_path()}")
    cheapest = plan.get("cheapest_gpu")
    if cheapest:
        price = Price(cheapest["gpu"], cheapest["price_per_hour"], section.get("currency") or "$", not cheapest["example_price"],
                      section.get("price_as_of") or "")
        lines.append(f"Cheapest GPU that fits  {describe(cheapest['gpu'], cheapest['hours'] * 3600, price)}, "
                     f"{METHOD_NAMES[cheapest['method']]} at batch {cheapest['per_device_train_batch_size']}")
    lines.append("(time: data-sheet TFLOPS x a utilisation fitted to published throughputs, within 15 % of them and up to "
                 f"45 % off elsewhere, benchmarks/RESULTS.md; example prices are not quotes: set yours in {prices_path()})")
    return "\n".join(lines)


# -- the wizard's method step ----------------------------------------------------------------------------


def session_workload(session, tokens: Workload | None) -> Workload | None:
    """What the session will train: the dataset's counted tokens x num_train_epochs, or max_steps'
    worth of batches when max_steps is set. None when the dataset has not been counted."""
    if tokens is None:
        return None
    t = session.training
    if t.max_steps and t.max_steps > 0:
        spread = session.distributed.nproc_per_node if isinstance(session.distributed.nproc_per_node, int) else 1
        rows = t.max_steps * t.per_device_train_batch_size * t.gradient_accumulation_steps * spread * session.distributed.nnodes
        return Workload(int(rows * tokens.tokens_per_row), 1.0, tokens.tokens_per_row, rows, tokens.source)
    return Workload(tokens.train_tokens, float(t.num_train_epochs), tokens.tokens_per_row, tokens.rows, tokens.source)


def method_step_lines(info, session, workload: Workload, gpu_name: str | None, recommendation, *, num_gpus: int = 1,
                      prices: PriceList | None = None, others: int = 3) -> list[str]:
    """The method step's time-and-cost lines: the plan on this GPU, then the other GPUs that fit,
    cheapest first. E.g. 'This plan, LoRA on RTX 4090: about 1 h 40 min, about $1.15 at $0.69/h'."""
    from engine.planner.target_modules import count_trainable_params

    prices = prices if prices is not None else load_prices(strict=False)
    examples = sorted({p.as_of for p in prices.prices.values() if not p.mine})
    said = f"; prices marked * are examples ({', '.join(examples)}), not quotes" if examples else ""
    lines = [f"Time and cost for {workload.describe()}{said}:"]
    spec = catalogue_gpu(gpu_name)
    rec = recommendation
    backend = session.backend
    if rec is not None and rec.method and spec is not None and spec.peak_tflops:
        trainable = count_trainable_params(info, rec.target_modules, rec.r) if rec.method != "full" else 0
        timed = workload.time(info, rec.method, peak_tflops=spec.peak_tflops, batch=rec.per_device_train_batch_size,
                              trainable_params=trainable, gradient_checkpointing=bool(rec.gradient_checkpointing),
                              backend=rec.backend or backend, num_gpus=num_gpus)
        price = prices.for_gpu(spec.name)
        lines.append(f"  this plan, {_method_name(rec.method)}: {describe(spec.name, timed.seconds, price, num_gpus, False)}"
                     + _star(price))
    elif spec is None:
        lines.append("  this machine: no time estimate without a GPU from the catalogue (CPU training is slow)")
    options = gpus_that_fit(info, workload, seq_len=session.model.max_seq_length, batch=4, backend=backend,
                            r=session.lora.r, prices=prices)
    shown = [o for o in options if spec is None or o.gpu != spec.name][:others]
    if shown:
        lines.append("  other GPUs that fit, cheapest first: " + "; ".join(
            f"{o.describe(False)}{_star(o.price)} ({_method_name(o.method)})" for o in shown))
    if prices.problem:
        lines.append(f"  {prices.problem} The example prices are shown.")
    return lines


def _star(price: Price | None) -> str:
    return "*" if price is not None and not price.mine else ""


def _method_name(method: str) -> str:
    from engine.planner.plan import METHOD_NAMES  # plan's table; its time-and-cost lines use it too

    return METHOD_NAMES[method]
