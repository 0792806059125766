"""Training-step throughput: irpo as `python -m irpo` trains (its datamodule and
LightningModule inside a Lightning Trainer, through irpo.training.train.train_policy) against TRL's
DPOTrainer at its fastest CPU settings, on the same model, pairs, batches and batch order.

    python bench/train_step.py              # tiny M_0 and a 42M Llama with a 32k BPE vocabulary
    python bench/train_step.py --quick      # a small setting (what the test runs)
    python bench/train_step.py --model DIR --bf16   # one checkpoint, bf16-mixed, on the GPU if there is one

Each side runs in its own subprocess (peak RSS cannot be reset within one), the sides
interleaved (A B A B ...) so that a neighbour's load hits both alike; tokens/s is the median
over repeats of the steady state after warm-up steps. Both sides train at alpha = 0, where
irpo's DPO + alpha*NLL and TRL's ["sigmoid", "sft"] with weights [1, alpha] are the same loss
(their NLL terms differ: irpo's is per sequence, TRL's a batch token mean); the cost of
either is the same at any alpha. The first batch's loss of both is printed as the check.

Reference log-probs are precomputed before training on both sides and are not timed. The
token count of a pair is prompt + chosen + prompt + rejected, as a plain step feeds them;
the same for both sides. MFU is the FLOPs a side computes (6 per parameter per position it
runs through the layers or the LM head: irpo's packed pairs, TRL's padded rows) per second
over this machine's fp32 matmul peak; the workload line shows what a perfect
step would skip: the prompt's second copy and padding.

The 42M model and its tokenizer are built here, offline (tokenizers' BPE trainer on the text
of ../shared/data), and cached under bench/.cache/.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def checkout_module(name: str):
    """This checkout's irpo/<name>.py, by path: a --before worker imports irpo from another
    tree (one from before irpo set threads or the allocator has neither), and every side then
    threads and allocates alike."""
    spec = importlib.util.spec_from_file_location(f"bench_{Path(name).name}", ROOT / "irpo" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


THREADS = checkout_module("run/threads")
# As `python -m irpo` does, before torch loads (the matmul peak is measured in this process);
# each side's subprocess measures its cores again (a spin set here it inherits, as a user's).
WAIT = THREADS.set_wait()
# Every side keeps freed blocks as `python -m irpo` does: a process setting, like the threads,
# not a part of the step being compared.
ALLOCATOR = checkout_module("run/allocator").keep_freed_memory()
CACHE = ROOT / "bench" / ".cache"
DATA = Path(os.environ.get("IRPO_SHARED_DATA", ROOT.parent.parent / "shared" / "data"))
if not DATA.exists():
    DATA = Path("/work/shared/data")


@dataclass
class Workload:
    name: str
    model_dir: str
    ref_dir: str
    pairs: int  # per step
    warmup: int  # steps not timed
    steps: int  # steps timed
    prompt: tuple[int, int]  # token length range
    completion: tuple[int, int]
    seed: int = 0
    beta: float = 0.1
    lr: float = 1e-5
    device: str = "cpu"
    precision: str = "32-true"  # bf16-mixed: float32 master weights, bf16 autocast, on both sides


# --- models and text ------------------------------------------------------------------------
def corpus_lines() -> list[str]:
    lines = []
    for name in ("gsm8k/train.jsonl", "math/train.jsonl"):
        path = DATA / name
        if path.exists():
            for row in map(json.loads, path.open()):
                lines += [str(v) for k, v in row.items() if isinstance(v, str) and len(v) > 20]
    if not lines:
        raise SystemExit(f"bench: no text under {DATA} to train a tokenizer on")
    return lines


def perturbed_copy(src: str, dst: Path, seed: int) -> str:
    """A reference unlike the policy (the DPO loss is then not log 2 at the first step, so the
    equal-loss check means something)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (dst / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(src)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.3 * p.std().clamp(min=1e-3))
        model.save_pretrained(dst)
        AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return str(dst)


def bpe_llama(vocab: int, hidden: int, layers: int, intermediate: int) -> str:
    """A random Llama with a byte-level BPE tokenizer trained on the shared data's text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = CACHE / f"llama_v{vocab}_h{hidden}_l{layers}"
    if (path / "config.json").exists():
        return str(path)
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(corpus_lines(), trainer)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    tmp = path.with_name(path.name + ".tmp")
    LlamaForCausalLM(cfg).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(path)
    return str(path)


def make_pairs(w: Workload) -> list[dict]:
    """Text pairs whose token lengths are drawn from the workload's ranges: slices of the
    shared data's text, re-decoded, so both sides tokenize the same strings."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(w.model_dir)
    rng = random.Random(w.seed)
    lines = corpus_lines()
    rng.shuffle(lines)
    stream = tok("\n".join(lines[:3000]), add_special_tokens=False)["input_ids"]

    def text(n: int, lead: str) -> str:
        start = rng.randrange(len(stream) - n)
        body = tok.decode(stream[start : start + n]).replace("</s>", "").replace("<s>", "").strip()
        return lead + body

    return [
        {
            "prompt": text(rng.randint(*w.prompt) - 2, "") + "\nA:",
            "chosen": text(rng.randint(*w.completion) - 1, " "),
            "rejected": text(rng.randint(*w.completion) - 1, " "),
        }
        for _ in range(w.pairs * (w.warmup + w.steps))
    ]


# --- one side in its own process ---------------------------------------------------------------
def irpo_side(w: Workload, pairs: list[dict], work: Path, alpha: float) -> dict:
    """irpo's datamodule, reference pass and train_policy (LightningModule in a Trainer)."""
    from hydra import compose, initialize_config_dir
    from lightning.pytorch.loggers import Logger

    from irpo.cli import register_all
    from irpo.models.load import load_policy, load_tokenizer
    from irpo.run.artifacts import write_jsonl
    from irpo.training.data import IterationData
    from irpo.training.train import train_policy

    class StepClock(Logger):
        """irpo logs every step (log_every_n_steps=1) right after the optimizer step."""

        name, version = "clock", "0"
        times: list[float] = []
        losses: list[float] = []

        def log_hyperparams(self, *args, **kwargs) -> None:
            pass

        def log_metrics(self, metrics, step=None) -> None:
            if "train/loss" in metrics:
                self.times.append(time.perf_counter())
                self.losses.append(float(metrics["train/loss"]))

    import irpo.cli

    register_all()
    # irpo's own conf/ (with --before, the other tree's), not this checkout's
    conf = irpo.cli.conf_dir() if hasattr(irpo.cli, "conf_dir") else Path(irpo.__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose(
            "config",
            overrides=[
                f"model.path={w.model_dir}",
                f"alpha={alpha}",
                f"beta={w.beta}",
                f"model.lr={w.lr}",
                f"trainer.batch_size={w.pairs}",
                f"trainer.max_steps={w.warmup + w.steps}",
                "trainer.log_every_n_steps=1",
                "trainer.progress_bar=false",
                "trainer.checkpoint_every_n_steps=100000",
                "logger.wandb.enabled=false",
                f"trainer.precision={w.precision}",
                *(["trainer.accelerator=gpu"] if w.device == "cuda" else []),
            ],
        )
    it = work / "iter_0"
    it.mkdir(parents=True)
    write_jsonl(it / "pairs.jsonl", pairs)
    import irpo.training.batching

    # one micro-batch of the step's pairs (a --before tree takes the micro-batch size itself)
    batching = (
        irpo.training.batching.MicroBatching(w.pairs, w.pairs)
        if hasattr(irpo.training.batching, "MicroBatching")
        else w.pairs
    )
    try:
        from irpo import methods
        from irpo.pairs import PairRule

        method, leading, rule = methods.build(cfg), (cfg, methods.build(cfg)), (PairRule(1),)
        from irpo.spec import build

        leading = (build(cfg),)
    except ModuleNotFoundError as missing:  # a source tree from before the run spec (irpo.spec) keeps `leading`
        if missing.name != "irpo.spec":
            raise
    except ImportError:  # a source tree from before methods were objects (--before)
        method, leading, rule = "pairs", (cfg,), (1, None, False)
    settings = (1, 1.0, *rule, w.seed, 100_000, batching, 1)
    import irpo.training.data

    if hasattr(irpo.training.data, "DataSettings"):  # (a source tree from before it takes them one by one: --before)
        settings = (irpo.training.data.DataSettings(*settings),)
    data = IterationData(None, [], [], it, 0, load_tokenizer(w.model_dir), method, *settings)
    if "load_model" in inspect.signature(data.reference_logps).parameters:
        data.reference_logps(lambda: load_policy(w.ref_dir, "float32", False), w.device)
    else:  # a source tree from before the multi-process loop (--before)
        data.reference_logps(w.ref_dir, "float32", False, "cpu")
    clock = StepClock()
    train_policy(*leading, data, w.model_dir, it / "model", it / "train", [clock])
    return {"step_end": clock.times, "first_loss": clock.losses[0], "tokens": None}


def trl_side(w: Workload, pairs: list[dict], work: Path, alpha: float) -> dict:
    """TRL's DPOTrainer: precomputed reference log-probs, ["sigmoid", "sft"] with weights [1,
    alpha], its chunked LM head; the pairs in irpo's batch order (a sequential sampler)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from irpo.training.data import EpochSampler, shard_seed

    order = list(EpochSampler(len(pairs), shard_seed(w.seed, 0, -1)))
    record = {"step_end": [], "first_loss": None, "tokens": []}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            record["step_end"].append(time.perf_counter())

    class Trainer(DPOTrainer):
        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(train_dataset or self.train_dataset)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if record["first_loss"] is None:
                record["first_loss"] = float((loss[0] if isinstance(loss, tuple) else loss).detach())
            record["tokens"].append(int(inputs["attention_mask"].sum()))
            return loss

    args = DPOConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=w.pairs,
        gradient_accumulation_steps=1,
        max_steps=w.warmup + w.steps,
        learning_rate=w.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=w.beta,
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, alpha],
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=w.pairs,
        max_length=None,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=w.device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=w.seed,
        bf16=w.precision == "bf16-mixed",  # TRL's default is bf16 autocast; irpo's precision decides
    )
    tok = AutoTokenizer.from_pretrained(w.model_dir)
    trainer = Trainer(
        # float32 weights as irpo holds them under either precision (autocast computes in bf16)
        model=AutoModelForCausalLM.from_pretrained(w.model_dir, dtype=torch.float32),
        ref_model=AutoModelForCausalLM.from_pretrained(w.ref_dir, dtype=torch.float32),
        args=args,
        train_dataset=Dataset.from_list([pairs[i] for i in order]),
        processing_class=tok,
        callbacks=[Clock()],
    )
    trainer.train()
    return record


def worker(side: str, spec: dict) -> None:
    threads = THREADS.set_threads(spec["threads"])  # None: irpo's default, the cores this process may use
    w = Workload(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["workload"].items()})
    pairs = json.loads(Path(spec["pairs"]).read_text())
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as work:
        out = (irpo_side if side == "irpo" else trl_side)(w, pairs, Path(work), spec["alpha"])
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent.
    hwm = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    out["peak_rss_mib"] = int(hwm.split()[1]) / 1024
    out["omp_wait"], out["threads"] = WAIT, threads
    print("RESULT " + json.dumps(out))


def run_side(
    side: str,
    w: Workload,
    pairs_file: Path,
    threads: int | None,
    alpha: float,
    step_tokens: list[int],
    env: dict | None = None,
) -> dict:
    spec = {"workload": asdict(w), "pairs": str(pairs_file), "threads": threads, "alpha": alpha}
    env = {**os.environ, "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", side, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"bench: the {side} side failed:\n{proc.stderr[-3000:]}")
    r = json.loads(line[7:])
    ends = r["step_end"]
    timed = step_tokens[w.warmup : w.warmup + w.steps]
    r["tokens_per_s"] = sum(timed) / (ends[w.warmup + w.steps - 1] - ends[w.warmup - 1])
    return r


# --- what the machine and the workload allow --------------------------------------------------
def matmul_peak(threads: int, n: int = 2048, device: str = "cpu", dtype: str = "float32") -> float:
    """GFLOP/s of a large matmul, best of several (this machine's practical peak)."""
    import torch

    torch.set_num_threads(threads)
    n = 8192 if device == "cuda" else n
    a, b = (torch.randn(n, n, device=device, dtype=getattr(torch, dtype)) for _ in range(2))
    best = 0.0
    for _ in range(8):
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def workload_numbers(w: Workload, pairs: list[dict]) -> dict:
    """Token counts per step (irpo's tokenization, irpo's batch order) and what a plain
    padded step, irpo's step and a perfect step compute."""
    from transformers import AutoModelForCausalLM

    from irpo.models.load import load_tokenizer
    from irpo.training.batching import encode_examples
    from irpo.training.data import EpochSampler, shard_seed

    tok = load_tokenizer(w.model_dir)
    items, _ = encode_examples(
        tok, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs], [p["rejected"] for p in pairs], 100_000
    )
    order = list(EpochSampler(len(items), shard_seed(w.seed, 0, -1)))
    steps = [[items[i] for i in order[s * w.pairs : (s + 1) * w.pairs]] for s in range(w.warmup + w.steps)]
    P = lambda it: len(it["prompt_ids"])  # noqa: E731
    C, R = (lambda it: len(it["chosen_ids"])), (lambda it: len(it["rejected_ids"]))  # noqa: E731
    step_tokens = [sum(2 * P(it) + C(it) + R(it) for it in s) for s in steps]
    unique = sum(P(it) + C(it) + R(it) for s in steps for it in s)
    prompt = sum(P(it) for s in steps for it in s)
    plain_cells = sum(2 * len(s) * max(P(it) + max(C(it), R(it)) for it in s) for s in steps)
    model = AutoModelForCausalLM.from_pretrained(w.model_dir)
    cfg = model.config
    body = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    head = cfg.vocab_size * cfg.hidden_size
    # FLOPs each side computes (6 per parameter per position, attention's own not counted):
    # irpo runs prompt + chosen + rejected through the layers once per pair and the LM head at
    # the scored positions only; TRL runs 2B rows padded to the longest through both (on a
    # CPU, without Triton, its fused head scores every position: trl.trainer.utils.add_fused_lm_head).
    timed = steps[w.warmup :]
    scored = sum(C(it) + R(it) for s in timed for it in s)
    flops = {
        "irpo": 6 * (body * sum(P(it) + C(it) + R(it) for s in timed for it in s) + head * scored),
        "trl": 6 * (body + head) * sum(2 * len(s) * max(P(it) + max(C(it), R(it)) for it in s) for s in timed),
    }
    timed_tokens = sum(step_tokens[w.warmup :])
    return {
        "step_tokens": step_tokens,
        "pair_tokens": sum(step_tokens),
        "prompt_share": prompt / sum(step_tokens),
        "plain_padding": 1 - sum(step_tokens) / plain_cells,
        "ceiling": plain_cells / unique,
        "params": body + head,
        "flops_per_token": {side: f / timed_tokens for side, f in flops.items()},
        "total_params": sum(p.numel() for p in model.parameters()),
        "mean_lengths": (
            prompt / len(items),
            sum(C(it) for it in items) / len(items),
            sum(R(it) for it in items) / len(items),
        ),
    }


def pairs_path(w: Workload) -> Path:
    """Per bench process: two benches at once (a test beside a full run) do not share files."""
    return CACHE / f"pairs_{w.name.replace(' ', '_')}_{os.getpid()}.json"


def compare(w: Workload, threads: int, repeats: int, alpha: float, peak: float, before: str | None) -> dict:
    pairs = make_pairs(w)
    pairs_file = pairs_path(w)
    pairs_file.write_text(json.dumps(pairs))
    wl = workload_numbers(w, pairs)
    runs = {"irpo": [], "trl": []} | ({"before": []} if before else {})
    for _ in range(repeats):
        for side in runs:
            # "before": irpo's side run from another source tree (an earlier commit)
            env = {"PYTHONPATH": before} if side == "before" else None
            start = time.perf_counter()
            runs[side].append(
                run_side("irpo" if side == "before" else side, w, pairs_file, threads, alpha, wl["step_tokens"], env)
            )
            print(
                f"  {w.name}, {side}: {runs[side][-1]['tokens_per_s']:,.0f} pair-tokens/s ({time.perf_counter() - start:.0f} s with start-up)",
                file=sys.stderr,
                flush=True,
            )
    out = {"workload": wl}
    for side, rs in runs.items():
        tps = [r["tokens_per_s"] for r in rs]
        out[side] = {
            "tokens_per_s": statistics.median(tps),
            "all": tps,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            "first_loss": rs[0]["first_loss"],
        }
    trl_tokens = runs["trl"][0]["tokens"][: w.warmup + w.steps]
    out["same_tokens"] = trl_tokens == wl["step_tokens"]
    out["ratio"] = out["irpo"]["tokens_per_s"] / out["trl"]["tokens_per_s"]
    out["ratios"] = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs["irpo"], runs["trl"])]
    return out


def threads_check(w: Workload, cores: int) -> None:
    """irpo's tiny step with another process spinning on one core, as on a shared machine:
    irpo's default (threads and wait chosen from how busy the cores are at start), every core
    with the wait it chooses, one thread fewer, every core sleeping at once (passive), and
    every core with OpenMP's own ~3-ms spin."""
    pairs_file = pairs_path(w)
    step_tokens = workload_numbers(w, json.loads(pairs_file.read_text()))["step_tokens"]
    settings = [
        ("irpo's default: threads and wait chosen at start", None, {}),
        (f"num_threads={cores} (all cores), the wait chosen at start", cores, {}),
        (f"num_threads={max(cores - 1, 1)}", max(cores - 1, 1), {}),
        (f"num_threads={cores}, passive wait (no spin)", cores, {"GOMP_SPINCOUNT": "0"}),
        (f"num_threads={cores}, OpenMP's default wait (300,000 spins)", cores, {"GOMP_SPINCOUNT": "300000"}),
    ]
    print(
        f"\n== threads: irpo on {w.name} with one competing busy process (tokens/s: median, then each run; the settings alternate)"
    )
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        rates, waits = {label: [] for label, _, _ in settings}, set()
        for _ in range(2):
            for label, threads, env in settings:
                r = run_side("irpo", w, pairs_file, threads, 0.0, step_tokens, env)
                rates[label].append(r["tokens_per_s"])
                if label == settings[0][0]:
                    waits.add(f"{r['threads']} thread(s), {r['omp_wait']}")
    finally:
        competitor.kill()
    for label, rs in rates.items():
        print(f"  {label:<64}{statistics.median(rs):>10,.0f}   " + " ".join(f"{x:,.0f}" for x in rs))
    print("  the default chose: " + "; ".join(sorted(waits)))


def print_model(w: Workload, r: dict, peak: float) -> None:
    wl = r["workload"]
    p, c, rj = wl["mean_lengths"]
    print(
        f"\n== {w.name}: {wl['total_params'] / 1e6:.1f}M params ({wl['params'] / 1e6:.1f}M in layers + LM head), {w.pairs} pairs/step, "
        f"mean lengths prompt {p:.0f} / chosen {c:.0f} / rejected {rj:.0f} tokens"
    )
    print(f"{'side':<6}{'pair-tokens/s':>15}{'MFU':>8}{'peak RSS':>11}{'first-batch loss':>19}   repeats (tokens/s)")
    for side in [k for k in ("irpo", "trl", "before") if k in r]:
        s = r[side]
        print(
            f"{side:<6}{s['tokens_per_s']:>15,.0f}{s['mfu']:>8.1%}{s['peak_rss_mib']:>8.0f} MiB{s['first_loss']:>19.6f}   "
            + " ".join(f"{x:,.0f}" for x in s["all"])
        )
    diff = abs(r["irpo"]["first_loss"] - r["trl"]["first_loss"])
    tolerance = 1e-4 if w.precision == "32-true" else 2e-2  # bf16 logits round differently in each side's kernels
    spread = (max(r["ratios"]) - min(r["ratios"])) / 2
    print(
        f"ratio irpo/TRL {r['ratio']:.2f} (per repeat {', '.join(f'{x:.2f}' for x in r['ratios'])}; ±{spread:.2f})   "
        f"equal loss: {'yes' if diff <= tolerance else 'NO'} (|diff| {diff:.1e}), same tokens fed: {'yes' if r['same_tokens'] else 'NO'}"
    )
    print(
        f"workload: prompt share {wl['prompt_share']:.1%} of pair-tokens, padding {wl['plain_padding']:.1%} in a plain "
        f"2B-row step, none in irpo's packed row; ceiling of a perfect step over a plain one {wl['ceiling']:.2f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="the tiny model alone, few steps (what the test runs)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--before",
        metavar="DIR",
        help="also time irpo's step from this source tree (e.g. `git archive` of an earlier commit)",
    )
    ap.add_argument("--model", metavar="DIR", help="bench this checkpoint alone (its perturbed copy is the reference)")
    ap.add_argument(
        "--bf16", action="store_true", help="bf16-mixed on both sides (float32 master weights, bf16 autocast)"
    )
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker[0], json.loads(args.worker[1]))
    CACHE.mkdir(parents=True, exist_ok=True)
    import torch

    from irpo.models.load import tiny_m0_dir

    t0 = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision, unit = ("bf16-mixed", "bfloat16") if args.bf16 else ("32-true", "float32")
    peak = matmul_peak(args.threads, device=device, dtype=unit)
    where = torch.cuda.get_device_name() if device == "cuda" else f"{args.threads} threads"
    print(
        f"{'bf16' if args.bf16 else 'fp32'} matmul peak: {peak:.1f} GFLOP/s ({where}); timings on a shared machine are noisy: rerun on a quiet one"
    )
    print(f"OpenMP wait at start: {WAIT}")
    print(f"allocator: {ALLOCATOR}")
    tiny = tiny_m0_dir()
    workloads = [
        Workload(
            "tiny M_0",
            tiny,
            perturbed_copy(tiny, CACHE / "tiny_ref", 1),
            pairs=8,
            warmup=2,
            steps=4 if not args.quick else 2,
            prompt=(30, 60),
            completion=(10, 60),
            device=device,
            precision=precision,
        )
    ]
    if args.model:
        name = Path(args.model).name
        ref = perturbed_copy(args.model, CACHE / f"{name}_ref", 1)
        workloads = [
            Workload(
                name,
                args.model,
                ref,
                pairs=4 if args.quick else 8,
                warmup=1 if args.quick else 2,
                steps=2 if args.quick else 4,
                prompt=(30, 60) if args.quick else (80, 120),
                completion=(10, 60) if args.quick else (100, 300),
                device=device,
                precision=precision,
            )
        ]
    elif not args.quick:
        big = bpe_llama(vocab=32768, hidden=512, layers=8, intermediate=1408)
        # 4 pairs a step: at 8 the bench took 13 minutes on a 2-core machine with a 66 GFLOP/s peak
        workloads.append(
            Workload(
                "llama-42m",
                big,
                perturbed_copy(big, CACHE / "llama_ref", 1),
                pairs=4,
                warmup=1,
                steps=2,
                prompt=(80, 120),
                completion=(100, 300),
            )
        )
    results = [
        (w, compare(w, args.threads, 1 if args.quick else args.repeats, 0.0, peak, args.before)) for w in workloads
    ]
    # the peak again, after: on a shared machine the first reading may have been a busy moment
    peak = max(peak, matmul_peak(args.threads, device=device, dtype=unit))
    print(
        f"{'bf16' if args.bf16 else 'fp32'} matmul peak, best of before and after: {peak:.1f} GFLOP/s (the MFU denominator)"
    )
    for w, r in results:
        for side in ("irpo", "trl", "before"):
            if side in r:
                # "before" is the plain padded step: it computes what TRL's does
                r[side]["mfu"] = (
                    r["workload"]["flops_per_token"]["trl" if side == "before" else side]
                    * r[side]["tokens_per_s"]
                    / (peak * 1e9)
                )
        print_model(w, r, peak)
    if not args.quick and not args.model and device == "cpu":
        threads_check(workloads[0], args.threads)
    for w in workloads:
        pairs_path(w).unlink()
    print(f"\nbench time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
