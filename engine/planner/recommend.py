"""Which method, rank, batch and checkpointing fit this model on this GPU (or CPU), and why.

The order of preference is full fine-tuning > LoRA > QLoRA: the first that fits within
HEADROOM of the memory wins. Within a method the planner first drops gradient checkpointing
(faster when memory allows), then halves the batch while raising gradient accumulation so the
effective batch stays what the person asked for.

The plan is made for the backend that will run: "unsloth", "peft", or "auto", which runs Unsloth
wherever it imports and so is planned for Unsloth. A plan for Unsloth is checked against the peft
backend too; when only Unsloth's kernels make it fit, `backend` says "unsloth" so that the session
pins it and "auto" cannot fall back to a peft run that would run out of memory.

On several GPUs (`num_gpus` a node, `nodes` nodes) the plan is per GPU and picks the strategy too:
one GPU ("none") when nothing can be split (an effective batch of 1); DDP when the method fits on
each GPU with a full copy (about N times the throughput); FSDP when it fits only sharded; FSDP with
CPU offload (the sharded states in RAM: slower, but the known recipe for a 70B on two 24 GB cards)
when it fits only so and the RAM holds the shards. Methods keep their order: a method that fits
with any strategy beats a leaner one. The effective batch is kept across GPUs: per-device batch x
accumulation x GPUs.

Under FSDP the loading counts too (engine.planner.distributed_terms): Unsloth loads the whole model
onto every GPU before it shards it (4-bit QLoRA included, by its own account), the peft backend loads
it into every process's RAM and moves only the shards to the GPUs. When a layout fits Unsloth's
training step but not its loading, the plan moves to the peft backend, and `backend` says "peft"
so that the session pins it.
The RAM the peft load needs (the whole model in every process of a node) is checked against this
machine's RAM; planning for a catalogue GPU it is a note.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from engine.errors import UserError
from engine.planner.architecture import ModelInfo
from engine.planner.memory import BACKENDS, MemoryEstimate, estimate_memory
from engine.planner.memory_terms import planned_backend

# Plan to use at most 90% of the memory: allocator spikes and other processes need the rest.
HEADROOM = 0.9
# On a CPU the operating system and the data pipeline share the RAM.
RAM_HEADROOM = 0.8
DEFAULT_R = 16
HIGH_CAPACITY_R = 64  # the seed's "higher capacity" preset
OPTIM = "adamw_8bit"
PREFERENCE = ("full", "lora", "qlora")
OFFLOAD_PREFERENCE = ("qlora", "lora")  # FSDP with CPU offload: the fewest bytes over PCIe first
SLOW_ON_CPU_PARAMS = 2e9
NAMES = {"full": "Full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (4-bit base)"}
KERNELS = {"unsloth": "with Unsloth's kernels", "peft": "on the peft backend"}


@dataclass
class Recommendation:
    method: str | None
    r: int | None
    lora_alpha: int | None
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    target_modules: list[str]
    reason: str
    estimate: MemoryEstimate | None = None
    device: str = "cuda"
    budget_gb: float | None = None
    # The rank above this one (64, the higher-capacity preset) would fit with the same batch and checkpointing.
    higher_capacity_fits: bool = False
    # "unsloth" when the plan fits only with Unsloth's kernels (offloaded checkpoints, fused loss):
    # the session must pin it. None when it fits either backend.
    backend: str | None = None
    # The backend the estimate is for ("auto" is planned as "unsloth"), and the recommended step's
    # estimate on each backend (GiB).
    planned_backend: str = "unsloth"
    by_backend: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Several GPUs: "none" (one GPU), "ddp" or "fsdp"; the GPUs the plan is for (all nodes), and
    # whether FSDP keeps the sharded states in RAM (offloaded_gb a process). The estimate is per GPU.
    strategy: str = "none"
    world_size: int = 1
    nproc_per_node: int = 1
    nnodes: int = 1
    cpu_offload: bool = False
    offloaded_gb: float = 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["estimate"] = self.estimate.to_dict() if self.estimate else None
        return data


def recommend(
    info: ModelInfo,
    vram_gb: float | None,
    *,
    seq_len: int = 512,
    batch_size: int = 4,
    gradient_accumulation_steps: int = 4,
    ram_gb: float | None = None,
    backend: str = "auto",
    r: int = DEFAULT_R,
    num_gpus: int = 1,
    nodes: int = 1,
    node_ram_gb: float | None = None,
) -> Recommendation:
    """The best plan for `info` on a GPU with `vram_gb` GiB, or on the CPU when `vram_gb` is None,
    for `backend` ("auto", "unsloth" or "peft") at LoRA rank `r`.

    On the CPU `ram_gb` (available RAM) is the budget when given. With `num_gpus` GPUs on each of
    `nodes` nodes the plan is per GPU and names its strategy; `node_ram_gb` (a node's available
    RAM, None when unknown: planned hardware) bounds FSDP's CPU offload.
    """
    for label, value in (
        ("--seq-len", seq_len),
        ("--batch", batch_size),
        ("gradient_accumulation_steps", gradient_accumulation_steps),
        ("--rank", r),
        ("--num-gpus", num_gpus),
        ("--nodes", nodes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{label} must be a positive whole number, not {value!r}.")
    if vram_gb is not None and (isinstance(vram_gb, bool) or not isinstance(vram_gb, (int, float)) or not vram_gb > 0):
        raise UserError(f"--vram must be a positive number of GB, not {vram_gb!r}.")
    if backend not in ("auto", *BACKENDS):
        raise UserError(f'--backend must be "auto", "unsloth" or "peft", not {backend!r}.')
    plan = _Planner(info, seq_len, batch_size, batch_size * gradient_accumulation_steps, planned_backend(backend), r,
                    pinned=backend != "auto")
    if vram_gb is None:
        return plan.cpu(ram_gb)
    if num_gpus * nodes > 1:
        return plan.several(float(vram_gb), num_gpus, nodes, node_ram_gb)
    return plan.gpu(float(vram_gb))


def _candidates(batch_size: int, effective: int):
    """(batch, accumulation, checkpointing) from fastest to leanest, keeping the effective batch."""
    yield batch_size, max(1, math.ceil(effective / batch_size)), False
    batch = batch_size
    while True:
        yield batch, max(1, math.ceil(effective / batch)), True
        if batch == 1:
            break
        batch = max(1, batch // 2)


def _estimate(info, method, batch, seq_len, checkpointing, device, backend, r=DEFAULT_R, layout=None) -> MemoryEstimate:
    """One candidate step; checkpointing is Unsloth's offloaded mode on the unsloth backend.
    `layout` is (strategy, world_size, cpu_offload) on several GPUs."""
    if checkpointing:
        checkpointing = "unsloth" if backend == "unsloth" else True
    strategy, world, offload = layout or ("none", 1, False)
    return estimate_memory(
        info, method, r=r, target_modules=None, batch_size=batch, seq_len=seq_len,
        gradient_checkpointing=checkpointing, optim=OPTIM, device=device, backend=backend,
        strategy=strategy, world_size=world, cpu_offload=offload,
    )


@dataclass
class _Planner:
    info: ModelInfo
    seq_len: int
    batch_size: int
    effective: int
    backend: str  # "unsloth" or "peft"
    r: int
    pinned: bool = False  # the backend was chosen, not "auto"
    layout: tuple = ("none", 1, False)  # (strategy, world_size, cpu_offload) of the estimates
    ram_budget: float | None = None  # RAM a process may use for FSDP's offloaded shards (None: unchecked)
    per_node: int = 1  # processes (GPUs) a node

    def estimate(self, method, batch, checkpointing, device, backend=None, r=None, layout=None) -> MemoryEstimate:
        return _estimate(self.info, method, batch, self.seq_len, checkpointing, device, backend or self.backend,
                         r or self.r, layout or self.layout)

    def first_fit(self, method, budget, device, backend=None):
        world = self.layout[1]
        for batch, accumulation, checkpointing in _candidates(self.batch_size, math.ceil(self.effective / world)):
            estimate = self.estimate(method, batch, checkpointing, device, backend)
            fits = budget is None or estimate.total_gb <= budget
            ram = max(estimate.offloaded_gb, estimate.load_ram_gb)  # the shards, or the whole model while loading
            if fits and (self.ram_budget is None or ram <= self.ram_budget):
                return batch, accumulation, checkpointing, estimate
        return None

    # -- GPU -------------------------------------------------------------------------------------
    def gpu(self, vram_gb: float) -> Recommendation:
        budget = vram_gb * HEADROOM
        for method in PREFERENCE:
            fit = self.first_fit(method, budget, "cuda")
            if fit is not None:
                rec = self.build(method, *fit, "cuda", budget)
                rec.reason = self.gpu_reason(rec, vram_gb)
                return rec
        return self.nothing_fits(vram_gb, budget)

    def build(self, method, batch, accumulation, checkpointing, estimate, device, budget) -> Recommendation:
        lora = method in ("lora", "qlora")
        rec = Recommendation(
            method=method,
            r=self.r if lora else None,
            lora_alpha=2 * self.r if lora else None,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            gradient_checkpointing=checkpointing,
            target_modules=list(self.info.presets["recommended"]) if lora else [],
            reason="",
            estimate=estimate,
            device=device,
            budget_gb=round(budget, 2) if budget is not None else None,
            planned_backend=self.backend,
            strategy=estimate.strategy,
            world_size=estimate.world_size,
            cpu_offload=estimate.cpu_offload,
            offloaded_gb=estimate.offloaded_gb,
        )
        for backend in BACKENDS:
            same = estimate if backend == self.backend else self.estimate(method, batch, checkpointing, device, backend)
            rec.by_backend[backend] = same.total_gb
        # Planned for Unsloth, but "auto" falls back to peft where Unsloth does not import.
        if self.backend == "unsloth" and budget is not None and rec.by_backend["peft"] > budget:
            rec.backend = "unsloth"
        if lora and self.r < HIGH_CAPACITY_R:
            bigger = self.estimate(method, batch, checkpointing, device, r=HIGH_CAPACITY_R)
            rec.higher_capacity_fits = budget is None or bigger.total_gb <= budget
        return rec

    def gpu_reason(self, rec: Recommendation, vram_gb: float) -> str:
        text = f"{NAMES[rec.method]} fits: about {rec.estimate.total_gb:.1f} of {_size(vram_gb)} GB {KERNELS[self.backend]}"
        if rec.method == "lora":
            full = self.estimate("full", 1, True, "cuda")
            text += f" (full fine-tuning would need about {full.total_gb:.0f} GB)"
        elif rec.method == "qlora":
            lora = self.estimate("lora", 1, True, "cuda")
            text += f" (16-bit LoRA would need about {lora.total_gb:.0f} GB)"
        return text + self.changes(rec) + self.pin_sentence(rec)

    def changes(self, rec: Recommendation) -> str:
        changes = []
        if rec.per_device_train_batch_size != self.batch_size or rec.world_size > 1:
            gpus = f" x {rec.world_size} GPUs" if rec.world_size > 1 else ""
            changes.append(
                f"batch {rec.per_device_train_batch_size} x {rec.gradient_accumulation_steps} accumulation{gpus} "
                f"keeps the effective batch of {self.effective}"
            )
        if rec.gradient_checkpointing:
            changes.append("gradient checkpointing is needed")
        text = "; " + " and ".join(changes) if changes else ""
        if rec.method in ("lora", "qlora"):
            text += f"; rank {rec.r}" + (f" (rank {HIGH_CAPACITY_R} would fit too)" if rec.higher_capacity_fits else "")
        return text + "."

    def pin_sentence(self, rec: Recommendation) -> str:
        if rec.backend == "peft":
            unsloth = rec.by_backend.get("unsloth", 0.0)
            return (
                f" It loads only on the peft backend: Unsloth loads the whole model onto every GPU before sharding it "
                f"(unsloth/models/fsdp2_load.py), about {unsloth:.1f} GB a GPU, so the session's backend is set to peft."
            )
        if rec.backend != "unsloth":
            return ""
        text = (
            f" It fits only with Unsloth's kernels (checkpoints offloaded to RAM, fused loss): the peft backend "
            f"would need about {rec.by_backend['peft']:.1f} GB"
        )
        if self.pinned:
            return text + "."
        return text + ", so the session's backend is set to unsloth (auto would fall back to peft where Unsloth does not import)."

    def nothing_fits(self, vram_gb: float, budget: float) -> Recommendation:
        leanest = self.estimate("qlora", 1, True, "cuda")
        suggestions = []
        shorter = self.seq_len // 2
        while shorter >= 128:
            step = _estimate(self.info, "qlora", 1, shorter, True, "cuda", self.backend, self.r)
            if step.total_gb <= budget:
                suggestions.append(f"max_seq_length {shorter}")
                break
            shorter //= 2
        if self.backend == "peft":
            unsloth = self.estimate("qlora", 1, True, "cuda", backend="unsloth")
            if unsloth.total_gb <= budget:
                suggestions.append(f"the unsloth backend (QLoRA about {unsloth.total_gb:.1f} GB)")
        suggestions.append(f"a GPU with at least {math.ceil(leanest.total_gb / HEADROOM)} GB")
        fixed = leanest.total_gb - leanest.components["activations"] - leanest.components["logits"]
        if fixed > 0:
            scale = (budget - (leanest.total_gb - fixed)) / fixed
            if scale > 0.05:
                suggestions.append(f"a model under about {self.info.params * scale / 1e9:.1f}B parameters")
        how = "Unsloth's offloaded checkpointing" if self.backend == "unsloth" else "gradient checkpointing on the peft backend"
        reason = (
            f"Nothing fits in {_size(vram_gb)} GB: even QLoRA at batch 1 with {how} needs about "
            f"{leanest.total_gb:.1f} GB; " + ", or ".join(suggestions) + " would fit."
        )
        return Recommendation(
            method=None, r=None, lora_alpha=None, per_device_train_batch_size=1,
            gradient_accumulation_steps=self.effective, gradient_checkpointing=True, target_modules=[],
            reason=reason, estimate=leanest, device="cuda", budget_gb=round(budget, 2), planned_backend=self.backend,
            by_backend={b: self.estimate("qlora", 1, True, "cuda", backend=b).total_gb for b in BACKENDS},
        )

    # -- several GPUs ------------------------------------------------------------------------------
    def several(self, vram_gb: float, num_gpus: int, nodes: int, node_ram_gb: float | None) -> Recommendation:
        world = num_gpus * nodes
        budget = vram_gb * HEADROOM
        self.per_node = num_gpus
        # FSDP's offloaded shards: every process of a node keeps its own in that node's RAM.
        ram_budget = node_ram_gb * RAM_HEADROOM / num_gpus if node_ram_gb else None
        one = self.gpu(vram_gb)  # the one-GPU plan, for comparison (and the answer when nothing splits)
        if self.effective < 2:
            one.notes.append(f"An effective batch of {self.effective} cannot be split over {world} GPUs: one GPU is used.")
            return self._placed(one, num_gpus, nodes)
        # Offload is slow, so it comes last; under it the leanest method wins, for every step copies
        # each weight from RAM to the GPUs (4-bit weights move a quarter of the bytes) and the
        # optimizer steps on the CPU (never a full fine-tune's).
        searches = [
            (PREFERENCE, [("ddp", world, False), ("fsdp", world, False)]),
            (OFFLOAD_PREFERENCE, [("fsdp", world, True)]),
        ]
        for methods, candidates in searches:
            for method in methods:
                for layout in candidates:
                    # FSDP's RAM: the offloaded shards, and on the peft backend the whole model while loading.
                    self.layout, self.ram_budget = layout, ram_budget if layout[0] == "fsdp" else None
                    rec = self.fit_several(method, budget, vram_gb, one)
                    self.layout, self.ram_budget = ("none", 1, False), None
                    if rec is not None:
                        self.loading_note(rec, node_ram_gb)
                        return self._placed(rec, num_gpus, nodes)
        self.layout, self.ram_budget = ("fsdp", world, True), None
        leanest = self.estimate("qlora", 1, True, "cuda")
        backends = [self.backend] if self.pinned else list(BACKENDS)
        offloaded = [self.estimate("qlora", 1, True, "cuda", backend=b) for b in backends]
        sharded = self.estimate("qlora", 1, True, "cuda", layout=("fsdp", world, False))
        self.layout = ("none", 1, False)
        text = (
            f"Nothing fits on {world} x {_size(vram_gb)} GB: even QLoRA at batch 1 sharded with FSDP needs about "
            f"{sharded.total_gb:.1f} GB a GPU"
        )
        # With the offload the GPUs may hold it and the node's RAM not: the shards, or the whole model a process while loading.
        in_gpu = [e for e in offloaded if e.total_gb <= budget]
        more = "more GPUs, bigger GPUs or a smaller model"
        if in_gpu and ram_budget is not None:
            lean = min(in_gpu, key=lambda e: max(e.offloaded_gb, e.load_ram_gb))
            ram = max(lean.offloaded_gb, lean.load_ram_gb)
            where = f" on the {lean.backend} backend" if lean.backend != self.backend else ""
            text += (f"; with CPU offload{where} it needs about {lean.total_gb:.1f} GB a GPU but {ram:.1f} GB of RAM "
                     f"a process ({ram * num_gpus:.0f} GB a node; {node_ram_gb:.0f} GB available)")
            more = f"about {math.ceil(ram * num_gpus / RAM_HEADROOM)} GB of RAM, " + more
        elif sharded.load_gb > sharded.train_gb:
            text += (f" to load it (the training step needs about {sharded.train_gb:.1f}): Unsloth loads the whole "
                     "4-bit model onto every GPU before sharding it (unsloth/models/fsdp2_load.py)")
        else:
            text += f" (about {leanest.total_gb:.1f} GB with CPU offload)"
        rec = Recommendation(
            method=None, r=None, lora_alpha=None, per_device_train_batch_size=1,
            gradient_accumulation_steps=max(1, self.effective // world), gradient_checkpointing=True, target_modules=[],
            reason=text + f"; {more} would fit. On one GPU: {one.reason}",
            estimate=sharded, device="cuda", budget_gb=round(budget, 2), planned_backend=self.backend,
            by_backend={b: self.estimate("qlora", 1, True, "cuda", backend=b, layout=("fsdp", world, False)).total_gb
                        for b in BACKENDS},
            strategy="fsdp", world_size=world,
        )
        return self._placed(rec, num_gpus, nodes)

    def fit_several(self, method, budget, vram_gb, one) -> Recommendation | None:
        """The first fit of `method` in this layout on the planned backend or, where Unsloth fits its
        training step but cannot load the model (FSDP: the whole model on every GPU first), on peft."""
        fit = self.first_fit(method, budget, "cuda")
        if fit is not None:
            rec = self.build(method, *fit, "cuda", budget)
            rec.reason = self.several_reason(rec, vram_gb, one)
            return rec
        if self.pinned or self.backend != "unsloth" or self.layout[0] != "fsdp":
            return None
        fit = self.first_fit(method, budget, "cuda", backend="peft")
        if fit is None:
            return None
        self.backend = "peft"
        try:
            rec = self.build(method, *fit, "cuda", budget)
            rec.backend = "peft"
            rec.reason = self.several_reason(rec, vram_gb, one)
        finally:
            self.backend = "unsloth"
        return rec

    def loading_note(self, rec: Recommendation, node_ram_gb: float | None) -> None:
        """What loading on the peft backend needs in RAM: said, when the plan is not for this machine."""
        estimate = rec.estimate
        if estimate is None or not estimate.load_ram_gb or node_ram_gb:
            return
        rec.notes.append(
            f"Loading on the peft backend puts the whole model in every process's RAM before sharding it: about "
            f"{estimate.load_ram_gb:.1f} GB a process, {estimate.load_ram_gb * self.per_node:.0f} GB a node of "
            f"{self.per_node} GPUs (not checked: the plan is not for this machine)."
        )

    @staticmethod
    def _placed(rec: Recommendation, num_gpus: int, nodes: int) -> Recommendation:
        if rec.strategy == "none":
            rec.nproc_per_node, rec.nnodes = 1, 1
        else:
            rec.nproc_per_node, rec.nnodes = num_gpus, nodes
        return rec

    def several_reason(self, rec: Recommendation, vram_gb: float, one: Recommendation) -> str:
        name, world, each = NAMES[rec.method], rec.world_size, rec.estimate.total_gb
        size = f"{_size(vram_gb)} GB"
        alone = self.estimate(rec.method, 1, True, "cuda", layout=("none", 1, False))
        if rec.strategy == "ddp":
            text = (
                f"{name} fits on each GPU: about {each:.1f} of {size} a GPU {KERNELS[self.backend]}; DDP over {world} "
                f"GPUs keeps a full copy on each and trains about {world}x as fast as one"
            )
        elif not rec.cpu_offload:
            text = (
                f"{name} does not fit one GPU (about {alone.total_gb:.1f} GB even at batch 1): FSDP shards weights, "
                f"gradients and optimizer state over {world} GPUs, about {each:.1f} of {size} a GPU {KERNELS[self.backend]}"
            )
        else:
            sharded = self.estimate(rec.method, 1, True, "cuda", layout=("fsdp", world, False))
            # RAM peaks while loading on the peft backend (the whole model in every process), then holds the shards.
            ram = max(rec.offloaded_gb, rec.estimate.load_ram_gb)
            loading = f", {ram:.1f} GB while loading" if ram > rec.offloaded_gb else ""
            text = (
                f"{name} fits neither one GPU (about {alone.total_gb:.1f} GB) nor {world} sharded in GPU memory "
                f"(about {sharded.total_gb:.1f} GB a GPU): FSDP with CPU offload keeps the shards in RAM, about "
                f"{each:.1f} of {size} a GPU and {rec.offloaded_gb:.1f} GB of RAM a process{loading} "
                f"({ram * self.per_node:.0f} GB a node with one process a GPU); slower than without offload "
                f"(the optimizer steps on the CPU)"
            )
            if rec.method == "qlora":
                text += "; QLoRA rather than LoRA, for every step copies the weights from RAM and 4-bit ones are a quarter of the bytes"
        if one.method is not None and one.method != rec.method:
            text += f" (one GPU would allow only {NAMES[one.method]})"
        return text + self.changes(rec) + self.pin_sentence(rec)

    # -- CPU -------------------------------------------------------------------------------------
    def cpu(self, ram_gb: float | None) -> Recommendation:
        budget = ram_gb * RAM_HEADROOM if ram_gb else None
        slow = (
            f" A model of {self.info.params / 1e9:.1f}B parameters trains very slowly on a CPU; a GPU is worth it."
            if self.info.params >= SLOW_ON_CPU_PARAMS
            else ""
        )
        why = "No GPU: LoRA on the CPU (4-bit QLoRA saves memory but is no faster on a CPU)"
        if budget is None:
            estimate = self.estimate("lora", self.batch_size, False, "cpu")
            rec = self.build("lora", self.batch_size, math.ceil(self.effective / self.batch_size), False, estimate, "cpu", None)
            rec.reason = f"{why}; about {estimate.total_gb:.1f} GB of RAM.{slow}"
            return rec
        fit = self.first_fit("lora", budget, "cpu")
        if fit is not None:
            batch, accumulation, checkpointing, estimate = fit
            rec = self.build("lora", batch, accumulation, checkpointing, estimate, "cpu", budget)
            changes = ""
            if batch != self.batch_size:
                changes = f"; batch {batch} x {accumulation} accumulation keeps the effective batch of {self.effective}"
            if checkpointing:
                changes += " with gradient checkpointing"
            rec.reason = f"{why}; about {estimate.total_gb:.1f} of {ram_gb:.0f} GB RAM{changes}.{slow}" + self.pin_sentence(rec)
            return rec
        leanest = self.estimate("qlora", 1, True, "cpu")
        if leanest.total_gb <= budget:
            rec = self.build("qlora", 1, self.effective, True, leanest, "cpu", budget)
            rec.reason = (
                f"No GPU, and 16-bit LoRA does not fit in {ram_gb:.0f} GB RAM: QLoRA on the CPU needs about "
                f"{leanest.total_gb:.1f} GB (slow, but it fits).{slow}" + self.pin_sentence(rec)
            )
            return rec
        return Recommendation(
            method=None, r=None, lora_alpha=None, per_device_train_batch_size=1,
            gradient_accumulation_steps=self.effective, gradient_checkpointing=True, target_modules=[],
            reason=(
                f"No GPU, and {ram_gb:.0f} GB RAM is too little: even QLoRA at batch 1 needs about "
                f"{leanest.total_gb:.1f} GB; a smaller model or a GPU would fit."
            ),
            estimate=leanest, device="cpu", budget_gb=round(budget, 2), planned_backend=self.backend,
        )


def _size(gb: float) -> str:
    return f"{round(gb, 1):g}"
