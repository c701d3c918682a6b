"""Goal B: seconds per GRPO step on CPU with TRL GRPOTrainer + SmolLM2-135M.
Usage: python grpo_speed.py '{"G":8,"lora":true,...}'  -> appends JSON line to results_B.jsonl"""

import json, os, sys, time, resource, collections

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
sys.path.insert(0, "/work/main")
import torch

torch.set_num_threads(int(os.environ.get("THREADS", 2)))
import reasoning_gym as rg
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer
import trl.extras.profiling as prof
from fedgrpo.prompting import build_messages, extract_answer, completion_text

opt = dict(
    G=8, bs=16, L=64, lora=True, gc=False, bf16=False, model_bf16=False, T=1.0, steps=4, spg=None, extra={}
)
opt.update(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})

# record TRL profiling timings per step
TIMES = collections.defaultdict(list)
_orig = prof.ProfilingContext._log_metrics


def _rec(self, d):
    TIMES[(self.step, self.name)].append(d)


prof.ProfilingContext._log_metrics = _rec

ds_rg = rg.create_dataset("chain_sum", size=256, seed=7, min_terms=2, max_terms=2, min_digits=2, max_digits=2)
rows = [dict(prompt=build_messages(ds_rg[i]["question"]), answer=ds_rg[i]["answer"]) for i in range(256)]
train = Dataset.from_list(rows)


def reward(completions, answer, **kw):
    out = []
    for c, a in zip(completions, answer):
        p = extract_answer(completion_text(c))
        out.append(1.0 if p is not None and p == str(a) else (0.1 if p is not None else 0.0))
    return out


tok = AutoTokenizer.from_pretrained("/tmp/smollm2")
model = AutoModelForCausalLM.from_pretrained(
    "/tmp/smollm2", dtype=torch.bfloat16 if opt["model_bf16"] else torch.float32
)
peft_config = None
if opt["lora"]:
    from peft import LoraConfig

    peft_config = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )

cfg_kwargs = dict(
    output_dir="/tmp/grpo_speed_out",
    use_cpu=True,
    bf16=opt["bf16"],
    report_to="none",
    save_strategy="no",
    logging_steps=1,
    max_steps=opt["steps"],
    per_device_train_batch_size=opt["bs"],
    gradient_accumulation_steps=1,
    num_generations=opt["G"],
    max_completion_length=opt["L"],
    temperature=opt["T"],
    beta=0.0,
    learning_rate=1e-5 if not opt["lora"] else 1e-4,
    gradient_checkpointing=opt["gc"],
    seed=0,
    dataloader_num_workers=0,
    disable_tqdm=True,
)
if opt["spg"]:
    cfg_kwargs["steps_per_generation"] = opt["spg"]
cfg_kwargs.update(opt["extra"])
args = GRPOConfig(**cfg_kwargs)

step_t = []


class CB(TrainerCallback):
    def on_step_begin(self, a, s, c, **k):
        self.t = time.perf_counter()

    def on_step_end(self, a, s, c, **k):
        step_t.append(time.perf_counter() - self.t)


logs = []


class LogCB(TrainerCallback):
    def on_log(self, a, s, c, logs=None, **k):
        if logs:
            logsappend(dict(logs))


logsappend = logs.append

trainer = GRPOTrainer(
    model=model,
    reward_funcs=reward,
    args=args,
    train_dataset=train,
    processing_class=tok,
    peft_config=peft_config,
    callbacks=[CB(), LogCB()],
)
t0 = time.time()
err = None
try:
    trainer.train()
except Exception as ex:
    import traceback

    traceback.print_exc()
    err = repr(ex)[:300]
wall = time.time() - t0
gen = collections.defaultdict(float)
for (st, name), ds in TIMES.items():
    gen[(st, name.split(".")[-1])] += sum(ds)
per_name = collections.defaultdict(list)
for (st, n), d in gen.items():
    if st >= 1:
        per_name[n].append(d)
res = dict(
    opt=opt,
    cfg=cfg_kwargs,
    error=err,
    step_s=[round(x, 2) for x in step_t],
    mean_s_per_step_skip1=round(sum(step_t[1:]) / max(1, len(step_t) - 1), 2) if len(step_t) > 1 else None,
    prof_mean_after_step0={n: round(sum(v) / len(v), 2) for n, v in per_name.items()},
    peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    wall=round(wall, 1),
    last_log={
        k: v
        for k, v in (logs[-2] if len(logs) > 1 else (logs[-1] if logs else {})).items()
        if k in ("reward", "completions/mean_length", "completions/clipped_ratio", "loss", "entropy")
    },
)
print("RESULT", json.dumps(res), flush=True)
with open("/work/main/bench/explore/results_B.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
