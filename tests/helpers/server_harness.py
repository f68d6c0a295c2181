"""A live server for the tests: `python -m redrafter_mlx.server` in a subprocess on a free
loopback port, over a tiny random model whose LM head never picks EOS (so generations run
as long as asked: the disconnect and time-limit tests need long ones)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlx.core as mx
import openai

from .tiny import tiny_drafter, tiny_model, write_drafter_dir, write_model_dir

ROOT = Path(__file__).resolve().parents[2]  # the repository
TEMPLATE = "{% for m in messages %}w2 {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}w1{% endif %}"
KEY = "test-key-0123456789"


def eosless_model():
    """A tiny model (64 words) whose logit for w0, the tokenizer's EOS, is always 0 (random
    rows elsewhere: in greedy decoding some other word always scores higher)."""
    model = tiny_model(0, "llama", vocab=64, tie_word_embeddings=False)
    head = model.lm_head.weight
    model.lm_head.weight = mx.concatenate([mx.zeros_like(head[:1]), head[1:]])
    return model


def write_dirs(root: Path) -> dict:
    """The model (with a chat template) and drafter directories."""
    model = eosless_model()
    model_dir = write_model_dir(root / "model", model)
    config_file = model_dir / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "chat_template": TEMPLATE}))
    return {"model": model_dir, "drafter": write_drafter_dir(root / "drafter", tiny_drafter(model)), "root": root}


def run_module(module: str, *args, env=None, timeout=60):
    command = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


class Server:
    """`python -m redrafter_mlx.server` on port 0; the port read from uvicorn's log."""

    def __init__(self, dirs: dict, *args, env=None, key: str = None, name: str = "server"):
        self.key = key
        self.log_path = dirs["root"] / f"{name}.log"
        self.log = open(self.log_path, "w")
        drafter = [] if "ar" in args else ["--drafter", dirs["drafter"]]  # --mode ar refuses a drafter
        command = [sys.executable, "-m", "redrafter_mlx.server", "--model", dirs["model"], *drafter, "--port", "0",
                   *args]
        environ = {k: v for k, v in os.environ.items() if k != "REDRAFTER_API_KEY"}
        self.process = subprocess.Popen(list(map(str, command)), stdout=self.log, stderr=subprocess.STDOUT,
                                        cwd=ROOT, env={**environ, **(env or {})})
        self.url = self._wait_for_port()
        self.http = httpx.Client(base_url=self.url, timeout=30, headers=self.auth())

    def _wait_for_port(self, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = re.search(r"Uvicorn running on (http://\S+:\d+)", self.log_path.read_text())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start:\n{self.log_path.read_text()}")

    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def client(self, **options) -> openai.OpenAI:
        return openai.OpenAI(**{"base_url": self.url + "/v1", "api_key": self.key or "unused", "max_retries": 0,
                                **options})

    def async_client(self, **options) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(**{"base_url": self.url + "/v1", "api_key": self.key or "unused",
                                     "max_retries": 0, **options})

    def health(self) -> dict:
        return self.http.get("/health").json()

    def wait_for(self, condition, timeout: float = 10) -> float:
        """Polls /health until condition(health) holds; returns the seconds it took."""
        start = time.monotonic()
        while not condition(self.health()):
            if time.monotonic() - start > timeout:
                raise AssertionError(f"timed out waiting; health: {self.health()}")
            time.sleep(0.02)
        return time.monotonic() - start

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def stop(self):
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
