"""Loading and saving causal LMs (shipped names, local directories, hub ids; devices and dtypes)
and the chat templates that wrap a task's prompts for instruction-tuned models."""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from alphallm.errors import UserError, first_line
from alphallm.io import atomic_dir, files_identity
from alphallm.lm.served import is_served, pin_served

__all__ = [
    "DTYPES",
    "KEPT_POLICY",
    "SHIPPED_MODELS_DIR",
    "chat_prompt",
    "check_config_fits_weights",
    "is_shipped_name",
    "load_causal_lm",
    "model_files",
    "pick_device",
    "pick_dtype",
    "pinned_model_path",
    "resolve_model_path",
    "save_causal_lm",
    "shipped_model",
    "training_dtype",
    "with_chat_template",
    "with_model_chat_template",
]

SHIPPED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
# In a loop run's directory (``runs/<name>/``): a link to the policy its gates kept last
# (``Loop.link_kept_policy``).
KEPT_POLICY = "kept-policy"
DTYPES = ("float32", "bfloat16", "float16")
T = TypeVar("T")
logger = logging.getLogger(__name__)


def resolve_model_path(name: str | Path) -> str:
    """A shipped model name (``arith-base``), a local directory, or a hub id, in that order; a served
    model's URL (``lm/served.py``) is itself. Only a bare name is a shipped model's: ``./arith-base``
    (where ``alphallm pretrain --task arith`` writes by default) is that directory."""
    name = str(name)
    if is_served(name):
        return name
    local = Path(name).expanduser()
    if is_shipped_name(name):
        if (local / "config.json").is_file():
            _say_shipped_first(name)
        return str(SHIPPED_MODELS_DIR / name)
    if local.is_file():
        raise UserError(f"{name}: a file, not a model directory")
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"{name}: not a model directory (no config.json){_in_a_run(local)}")
        return str(local)
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        shipped_names = sorted(p.parent.name for p in SHIPPED_MODELS_DIR.glob("*/config.json"))
        raise UserError(
            f"{name}: no such model directory (shipped models: {', '.join(shipped_names) or 'none'})"
        )
    return name


def is_shipped_name(name: str) -> bool:
    """Whether ``name`` is a shipped model's bare name (``arith-base``, not ``./arith-base``)."""
    bare = "/" not in name and name not in (".", "..")
    return bare and (SHIPPED_MODELS_DIR / name / "config.json").is_file()


def shipped_model(task: str) -> str | None:
    """The shipped model of ``task`` (``<task>-base``), the default policy of its commands; None for a
    task that ships none (gsm8k, math: a real model's tasks)."""
    name = f"{task}-base"
    return name if is_shipped_name(name) else None


@functools.cache  # once per name: a loop resolves its policy at every stage
def _say_shipped_first(name: str) -> None:
    logger.warning(f"{name}: the shipped model {name}, not the directory {name} here (write ./{name} for it)")


def pinned_model_path(name: str) -> str:
    """What a link to a model directory (a run's ``kept-policy``) points at now, relative where ``name``
    was, and a served model's URL with the model its server holds now (``served.pin_served``); any other
    name as it is. A run started from a link or URL must not change model when the link moves or the
    server's model does."""
    if is_served(name):
        return pin_served(name)
    path = Path(name).expanduser()
    if not path.is_symlink():
        return name
    real = os.path.realpath(path)
    if Path(real).parent == SHIPPED_MODELS_DIR.resolve():
        return Path(real).name  # a shipped model, by its name
    return real if path.is_absolute() else os.path.relpath(real)


def _in_a_run(path: Path) -> str:
    """Where the model is, for a loop run's directory or one of its rounds given as a model."""
    from alphallm.trees import is_loop_round, is_loop_run

    if is_loop_run(path):
        return f"; {path} is a loop run: its kept policy is {path / KEPT_POLICY}"
    if is_loop_round(path):
        return (
            f"; {path} is a loop round: its candidates are {path / 'sft'} (SFT) and {path / 'policy'} "
            f"(SFT + DPO), its gate.json says which it kept, and {path.parent / KEPT_POLICY} is the run's"
        )
    return ""


def model_files(name: str | Path) -> Any:
    """What identifies a model or critic directory's content (``io.files_identity``), for a saved result
    to be matched against; a hub id names itself."""
    path = Path(name) if Path(name).is_dir() else Path(resolve_model_path(name))
    return files_identity(path) if path.is_dir() else str(name)


def pick_device(device: str | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r} (cpu, cuda, cuda:1, mps or auto)") from None


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow and lossy there); bf16 on GPUs that support it, else fp16."""
    if dtype not in (None, "auto"):
        if dtype not in DTYPES:
            raise UserError(f"unknown dtype {dtype!r} ({', '.join(DTYPES)} or auto)")
        return getattr(torch, str(dtype))
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def training_dtype(dtype: str | None, *, lora: bool) -> str:
    """The dtype a model to fine-tune loads in: ``dtype`` when set; else float32 for full fine-tuning
    (plain AdamW on bf16 weights loses small updates) and auto with LoRA (the frozen base in bf16/fp16
    on a GPU, fp32 on CPU; PEFT keeps the adapters fp32). ``train-critic`` and the loop share it."""
    if dtype is not None:
        return dtype
    return "auto" if lora else "float32"


def load_causal_lm(
    name: str | Path, *, device: str | None = None, dtype: str | None = None
) -> tuple[Any, Any]:
    """Model and tokenizer from a shipped name, a directory or a hub id; errors are one line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if is_served(str(name)):
        raise UserError(
            f"{name}: a served model samples and scores over HTTP; what trains or reads weights needs a "
            "local model (a directory, shipped name or hub id)"
        )
    path = resolve_model_path(name)
    target = pick_device(device)
    _check_available(target, device)
    check_config_fits_weights(name, path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, target))
    except Exception as exc:  # missing or corrupt files, an unknown model_type, an invalid config
        raise UserError(f"{name}: could not load model ({type(exc).__name__}: {first_line(exc)})") from None
    if len(tokenizer) < 2 or not tokenizer("a b")["input_ids"]:
        # AutoTokenizer builds an empty tokenizer from a directory without tokenizer files.
        raise UserError(f"{name}: no usable tokenizer (save the tokenizer files beside the model)")
    model.to(target)  # type: ignore[arg-type]  # transformers' stubs type .to() oddly
    return model, tokenizer


def _check_available(target: torch.device, asked: str | None) -> None:
    """A device this torch or machine lacks (cuda without CUDA, cuda:3 on one GPU, mps off a Mac, xpu) is
    one line here, not a traceback from the first tensor moved there."""
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {asked!r}: this torch has no CUDA device (use cpu or auto)")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {asked!r}: this torch has no MPS device (use cpu or auto)")
    if target.type == "meta":
        raise UserError(f"device {asked!r} holds no data to compute with (use cpu or auto)")
    try:
        torch.empty(0, device=target)
    except (RuntimeError, AssertionError) as exc:
        raise UserError(
            f"device {asked!r}: not available here ({first_line(exc)}); use cpu or auto"
        ) from None


def check_config_fits_weights(name: str | Path, path: str) -> None:
    """A local directory whose config.json does not describe its safetensors weights stops here, in one
    line naming a tensor. transformers would build the model the config describes before it compares
    shapes: a config cut down to ``{"model_type": "llama"}`` beside 1.8 M saved parameters built a 6.7 B
    model and was killed for memory. The config's model is built on the meta device (no memory; about
    1 s for 7 B). Tensors the checkpoint names differently are not compared; a quantized checkpoint,
    whose stored shapes are packed, or a config transformers cannot read, is left to the loader."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    if not files:  # a hub id (its config is the hub's own) or another weights format
        return
    try:
        config = AutoConfig.from_pretrained(path)
        if getattr(config, "quantization_config", None):
            return
        with torch.device("meta"):
            expected = {
                k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()
            }
        saved: dict[str, tuple[tuple[int, ...], str]] = {}
        for file in files:
            with safe_open(str(file), "pt") as weights:
                for key in weights.keys():  # noqa: SIM118  (safe_open is no mapping)
                    saved[key] = (tuple(weights.get_slice(key).get_shape()), file.name)
    except Exception:  # the loader below reports what it cannot read, in its own line
        return
    for key, shape in expected.items():
        if key in saved and saved[key][0] != shape:
            stored, file_name = saved[key]
            raise UserError(
                f"{name}: config.json does not describe the saved weights ({key} is {list(shape)} by the "
                f"config, {list(stored)} in {file_name})"
            )


def save_causal_lm(model: Any, tokenizer: Any, path: str | Path) -> None:
    """``model`` and its tokenizer as a directory ``load_causal_lm`` reads, replacing ``path`` in one
    rename: a run killed while saving leaves the old directory or none, never half a model."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def chat_prompt(tokenizer: Any, prompt: str) -> str:
    """``prompt`` as the user's turn of the tokenizer's chat template, ready for the assistant's
    reply, as text. A BOS the template writes is dropped when the tokenizer adds its own, so that
    tokenising the result (as every backend and trainer does) gives the template's tokens once."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("this tokenizer has no chat template (leave the chat-template option off)")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]
    return text[len(bos) :] if adds_bos and text.startswith(bos) else text


def with_chat_template(task: T, tokenizer: Any) -> T:
    """A copy of ``task`` whose prompts go through the chat template (for instruction-tuned models).

    Everything that builds a state calls ``task.format_prompt``, so search, trees, training rows and
    critics all see the same templated prompt. Off by default: base models (ours included) model
    plain documents and have no template.
    """
    chat_prompt(tokenizer, "")  # fail early, with one line, when there is no template
    wrapped = copy.copy(task)
    plain = task.format_prompt  # type: ignore[attr-defined]
    # An instance attribute shadows the method, for outside callers and format_document alike.
    wrapped.format_prompt = lambda problem: chat_prompt(tokenizer, plain(problem))  # type: ignore[attr-defined]
    plain_imagine = task.imagine_prompt  # type: ignore[attr-defined]
    prefix = task.problem_prefix  # type: ignore[attr-defined]

    def imagine_prompt(examples: Sequence[Any] = ()) -> str:
        # Asked in the user's turn; the reply starts with the problem prefix, so it is one problem.
        if not examples:
            return str(plain_imagine(examples))
        shown = str(plain_imagine(examples)).removesuffix(prefix)
        ask = f"{shown}\nWrite one new problem of the same kind, different from these, on one line."
        return chat_prompt(tokenizer, ask) + prefix

    wrapped.imagine_prompt = imagine_prompt  # type: ignore[attr-defined]
    return wrapped


def with_model_chat_template(task: T, model: str | Path) -> T:
    """``with_chat_template`` with the tokenizer of ``model`` (a shipped name, directory or hub id;
    the tokenizer alone is loaded). A served model (``URL#name``) takes the tokenizer of the name
    after ``#``, a directory or hub id here, as its server applies none to completions."""
    from transformers import AutoTokenizer

    name = str(model)
    if is_served(name):
        name = name.partition("#")[2]
        if not name:
            raise UserError(
                f"--chat-template: after '#', name the served model's tokenizer ({model}#<dir or hub id>)"
            )
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name))
    except (OSError, ValueError) as exc:  # not in the hub's cache, no tokenizer files
        raise UserError(f"--chat-template: no tokenizer for {name} ({first_line(exc)})") from None
    return with_chat_template(task, tokenizer)
