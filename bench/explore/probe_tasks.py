"""Goal A: greedy acc / tag rate / majority rate / pass@8 per reasoning-gym task config for SmolLM2-135M."""

import json, os, sys, time, collections

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, "/work/main")
import torch
import reasoning_gym as rg
from transformers import AutoModelForCausalLM, AutoTokenizer
from fedgrpo.prompting import build_messages, extract_answer

torch.set_num_threads(int(os.environ.get("THREADS", 2)))
torch.manual_seed(0)
MODEL = "/tmp/smollm2"
tok = AutoTokenizer.from_pretrained(MODEL)
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()

TASKS = {
    "chain_sum_1d": ("chain_sum", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1)),
    "chain_sum_2d": ("chain_sum", dict(min_terms=2, max_terms=2, min_digits=2, max_digits=2)),
    "basic_arith_1d_pm": (
        "basic_arithmetic",
        dict(
            min_terms=2,
            max_terms=2,
            min_digits=1,
            max_digits=1,
            operators=("+", "-"),
            allow_parentheses=False,
            allow_negation=False,
        ),
    ),
    "products_1d": ("products", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1)),
    "products_2x1": ("products", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=2)),
    "syllogism": ("syllogism", dict()),
    "leg_counting_small": (
        "leg_counting",
        dict(min_animals=1, max_animals=2, min_instances=1, max_instances=3),
    ),
    "letter_counting_small": ("letter_counting", dict(min_words=3, max_words=5)),
    "number_sorting_small": (
        "number_sorting",
        dict(min_numbers=3, max_numbers=4, min_decimals=0, max_decimals=0, min_value=0, max_value=99),
    ),
    "family_relationships": ("family_relationships", dict()),
    "gsm_symbolic": ("gsm_symbolic", dict()),
    "gcd_small": ("gcd", dict(min_value=1, max_value=50)),
    "coin_flip": ("coin_flip", dict()),
    "count_bits": ("count_bits", dict()),
}


def prompts_for(entries, we=True):
    return [
        tok.apply_chat_template(
            build_messages(e["question"], worked_example=we), add_generation_prompt=True, tokenize=False
        )
        for e in entries
    ]


@torch.inference_mode()
def generate(prompts, do_sample, temperature=1.0, bs=48, max_new=64):
    outs = []
    for i in range(0, len(prompts), bs):
        enc = tok(prompts[i : i + bs], return_tensors="pt", padding=True, add_special_tokens=False)
        kw = dict(max_new_tokens=max_new, pad_token_id=tok.pad_token_id)
        if do_sample:
            kw.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kw.update(do_sample=False)
        g = model.generate(**enc, **kw)
        outs += tok.batch_decode(g[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return outs


def correct(entry, comp):
    pred = extract_answer(comp)
    if pred is None:
        return False
    try:
        return rg.get_score_answer_fn(entry["metadata"]["source_dataset"])(pred, entry) >= 1.0
    except Exception:
        return False


def run(
    label, name, cfg, n_greedy=100, n_pass=int(os.environ.get("NPASS", 20)), k=8, temps=(1.0, 0.7), we=True
):
    t0 = time.time()
    ds = rg.create_dataset(name, size=n_greedy, seed=1234, **cfg)
    entries = [ds[i] for i in range(n_greedy)]
    golds = collections.Counter(str(e["answer"]) for e in entries)
    maj = golds.most_common(1)[0][1] / len(entries)
    comps = generate(
        prompts_for(entries, we), do_sample=False, bs=50, max_new=int(os.environ.get("GMAX", 64))
    )
    acc = sum(correct(e, c) for e, c in zip(entries, comps)) / len(entries)
    tag = sum(extract_answer(c) is not None for c in comps) / len(comps)
    res = dict(
        label=label,
        task=name,
        cfg=cfg,
        worked_example=we,
        greedy_acc=acc,
        tag_rate=tag,
        majority_rate=maj,
        majority_answer=golds.most_common(1)[0][0],
        examples=[(entries[i]["question"][:200], entries[i]["answer"], comps[i][:200]) for i in range(3)],
    )
    pe = entries[:n_pass]
    pp = prompts_for(pe, we)
    for T in temps:
        rep = [p for p in pp for _ in range(k)]
        sc = generate(rep, do_sample=True, temperature=T, bs=60)
        ok = [correct(pe[j // k], c) for j, c in enumerate(sc)]
        res[f"pass@{k}_T{T}"] = sum(any(ok[q * k : (q + 1) * k]) for q in range(n_pass)) / n_pass
        res[f"sample_acc_T{T}"] = sum(ok) / len(ok)
        res[f"sample_tag_T{T}"] = sum(extract_answer(c) is not None for c in sc) / len(sc)
    res["seconds"] = round(time.time() - t0, 1)
    return res


if __name__ == "__main__":
    which = sys.argv[1].split(",") if len(sys.argv) > 1 else list(TASKS)
    we = not (len(sys.argv) > 2 and sys.argv[2] == "nowe")
    temps = tuple(float(t) for t in os.environ.get("TEMPS", "1.0").split(",") if t)
    out = "/work/main/bench/explore/results_A.jsonl"
    for label in which:
        name, cfg = TASKS[label]
        try:
            r = run(label, name, cfg, temps=temps, we=we)
        except Exception as ex:
            r = dict(label=label, error=repr(ex))
        print(json.dumps({k: v for k, v in r.items() if k != "examples"}), flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(r) + "\n")
