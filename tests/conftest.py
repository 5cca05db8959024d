"""Shared fixtures: composed configs, an isolated cache built once per session, no network."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared" / "toolemu"

os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("WANDB_API_KEY", None)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per test session: the tiny model and synthetic data are built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(cache_dir: Path) -> None:
    """The default cache (``paths.cache_dir``: the user's cache dir) is the session's, for this process and the
    launches it starts: no test writes into the user's real cache."""
    os.environ["AGENT_SAFETY_CACHE"] = str(cache_dir)


#: What the tests of the machinery (training, records, resume, identity, reuse, plan, cluster, logging) run on:
#: the random tiny model and the offline estimate, seconds a run and nothing to clone. The embedded default is
#: ``model=tiny_agent eval=generative``; ``compose_default`` composes it.
PINS = (("model", "model=tiny"), ("eval", "eval=estimate"))


def pinned(overrides: Sequence[str] = ()) -> list[str]:
    """The pins, less each one whose group the overrides choose themselves (``model=...``), then the overrides;
    leading flags (``-m``) stay first, as ``launch.py``'s command line needs them."""
    from agent_safety.config.compose import override_key

    chosen = {override_key(o) for o in overrides}
    n = next((i for i, o in enumerate(overrides) if not o.startswith("-")), len(overrides))
    return [*overrides[:n], *(pin for key, pin in PINS if key not in chosen), *overrides[n:]]


def compose(overrides: Sequence[str] = ()) -> object:
    """Compose ``conf/config.yaml`` with the pins and overrides, as ``launch.py`` would."""
    return compose_default(pinned(overrides))


def compose_default(overrides: Sequence[str] = ()) -> object:
    """Compose ``conf/config.yaml`` with overrides only: the embedded default where they choose nothing."""
    from agent_safety.config.compose import compose as compose_run

    return compose_run(overrides)


@pytest.fixture
def make_cfg(tmp_path: Path, cache_dir: Path) -> Callable[..., object]:
    """Compose a run config (pinned, as ``compose``) whose runs and cache live in test folders."""

    def make(*overrides: str, runs: Path | None = None) -> object:
        return compose([f"paths.runs_dir={runs or tmp_path / 'runs'}", f"paths.cache_dir={cache_dir}",
                        "threads=1", *overrides])

    return make


def shared_archive(name: str) -> Path:
    """A file of the study's published data in ../shared, or a visible skip."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the study's published data is not on this machine")
    return path


@pytest.fixture(scope="session")
def published() -> tuple[list, dict]:
    """Every trajectory of the study's two archives (streamed once per session, nothing extracted) and its
    toolkits, or a visible skip."""
    from agent_safety.evaluate.generative.replay import read_published, read_toolkits

    archives = [shared_archive(name) for name in ("upstream-data.tar.xz", "upstream-results-match.tar.xz")]
    return [e for a in archives for e in read_published(a)], read_toolkits(archives[0])


def stage_records(run_dir: Path) -> list[dict]:
    """The stage records of a run dir's one evaluation setting (``eval/<eval_id>/metrics.jsonl``)."""
    import json

    (metrics,) = Path(run_dir).glob("eval/*/metrics.jsonl")
    return [json.loads(line) for line in metrics.read_text().splitlines() if line]


def run_log(run_dir: Path) -> str:
    """A run dir's ``run.log``: what libraries and the project's info lines wrote while it ran ('' if none)."""
    path = Path(run_dir) / "run.log"
    return path.read_text(encoding="utf-8") if path.exists() else ""


#: The local OpenAI-compatible server of tests/llm/server.sh, and the model it serves.
LLM_URL = os.environ.get("AGENT_SAFETY_TEST_LLM_URL", "http://127.0.0.1:18080/v1").rstrip("/")
LLM_MODEL = "smollm2-135m"


def llm_answers(url: str, timeout: float = 10.0) -> bool:
    """Whether an OpenAI-compatible server at ``url`` lists the test model."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/models", timeout=timeout) as response:
            return LLM_MODEL in [m.get("id") for m in json.load(response).get("data", [])]
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def llm_url() -> str:
    """The test server's base URL, or a visible skip when it does not answer."""
    if not llm_answers(LLM_URL):
        pytest.skip(f"local LLM server not running at {LLM_URL}: bash tests/llm/server.sh start")
    return LLM_URL


#: The vLLM server of tests/llm/vllm.sh (the same model under the same name, with LoRA adapters at run time).
VLLM_URL = os.environ.get("AGENT_SAFETY_TEST_VLLM_URL", "http://127.0.0.1:18081/v1").rstrip("/")
VLLM_DIR = Path(os.environ.get("VLLM_TEST_DIR", "/tmp/agent-safety-vllm"))


@pytest.fixture(scope="session")
def vllm_url() -> str:
    """The vLLM test server's base URL, or a visible skip: why this CPU cannot run it, or how to start it."""
    if not llm_answers(VLLM_URL):
        unsupported = VLLM_DIR / "cpu-unsupported"
        if unsupported.is_file():
            pytest.skip(f"vLLM's CPU build cannot run on this CPU: {unsupported.read_text().strip()}")
        pytest.skip(f"vLLM test server not running at {VLLM_URL}: bash tests/llm/vllm.sh start")
    return VLLM_URL
