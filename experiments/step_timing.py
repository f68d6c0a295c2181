"""ReDrafter's time per step against AR's per token over several prompts, unprofiled, in
two passes: pass 1 pays kernel compilation for shapes not seen before, pass 2 shows the
steady state. On the H100 (16x4, 8 MT-Bench prompts) pass 2 measured 11.70 ms per step
against 5.0-6.0 ms per AR token: a step cost ~2.3 AR steps for 2.2 tokens, bound by the
host's per-operation cost, which led to compiled steps; pass 1 spent ~0.2-0.3 s per step
compiling (docs/perf.md). On another H100 (2026-12-07, 16x5, 8 HumanEval prompts, warmed up)
pass 2 ran 5.72 ms per step for 3.7 tokens against 3.02 ms per AR token (1.95x AR after the
first step) where demos.benchmark's wall time gave 1.15x on 80 prompts of the same set: ~150
ms per prompt outside a second pass's steps (docs/bench/h100_qwen15_decode_loop_2026-12-07.txt).
On a tenth H100, 48 prompts ran at 1.82x / 1.80x AR in both passes (wall time), nothing slow
outside the steps, where the benchmark's runs with mlx-lm's decoding interleaved were slow
(docs/bench/h100_qwen15_mlx_lm_interleaved_2026-12-07.txt).

  python -m experiments.step_timing [--model NAME|DIR --drafter DIR] [--beam 16x4[,16x4:48,...]] [--warm-up]
                                    [--prompts mtbench] [--num-prompts 10] [--max-tokens 64] [--mlx-lm]

Each request decodes through Engine.generate (resident steps on GPUs, packed on CPUs), with
no warm-up (pass 1 is the cold start) or, with --warm-up, after Engine.warm_up at each
prompt-length bucket, as demos.benchmark warms up (pass 1 is then timed as it times); several
beam shapes (--beam, comma separated) run interleaved with AR prompt by prompt in the one
process, so that they compare under the same conditions (AR's speed differs by ~10% between
processes on a GPU); --mlx-lm runs mlx-lm's AR after ours on each prompt, as demos.benchmark
interleaved it until 2026-12-07. Each pass gives AR's line, then one line per shape: its time
per step, its wall time per prompt as the benchmark counts it and what of it lies outside the
steps (before the first: prefill, first draft; after the last), and its steps as the caller
sees them: the time between the tokens of consecutive steps (the median step, and per prompt
the time of steps over twice the median beyond it), the first step's, and the resident cache's
compactions (a gather of every layer's slots, queued on the device) and growths per prompt
(kv_cache.ResidentCache; resident steps only: none on CPUs). Nothing is synchronised beyond
what the decode loops do themselves; experiments.profile_phases splits a packed step into its
phases (with a sync after each) and experiments.step_parts times a step's parts."""

import itertools
import statistics
import time
from collections import Counter

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
from experiments.common import add_prompt_flags, chat_prompts, load, parser
from redrafter_mlx import BeamShape, DecodeOptions, Stats
from redrafter_mlx.model.kv_cache import ResidentCache

SLOW = 2.0  # a step slower than this many median steps counts as slow


def counting_cache_events() -> Counter:
    """Counts ResidentCache compactions and growths from now on, in this process (the methods
    wrapped once; clear the counter to start again)."""
    events = Counter()
    for name in ("_compact", "_grow"):
        method = getattr(ResidentCache, name)

        def counted(self, *args, _method=method, _name=name, **kwargs):
            events[_name.strip("_")] += 1
            return _method(self, *args, **kwargs)

        setattr(ResidentCache, name, counted)
    return events


def timed_generation(run, prompt):
    """(Stats, wall seconds, [seconds from the request to each step's tokens])."""
    stats, arrivals = Stats(), []
    start = time.perf_counter()
    for _ in run(prompt, stats):
        arrivals.append(time.perf_counter() - start)
    return stats, time.perf_counter() - start, arrivals


def run_pass(runs: dict, prompts, events: Counter):
    """{method: Stats summed over the prompts}, {method: wall seconds}, {method: [per prompt:
    step arrivals]}, {method: cache events (counting_cache_events) during its requests}."""
    totals, wall = {name: Stats() for name in runs}, dict.fromkeys(runs, 0.0)
    arrivals, cache = {name: [] for name in runs}, {name: Counter() for name in runs}
    for prompt in prompts:
        for name, run in runs.items():
            before = Counter(events)
            stats, seconds, times = timed_generation(run, prompt)
            cache[name] += Counter(events) - before
            wall[name] += seconds
            arrivals[name].append(times)
            total = totals[name]
            total.generation_time += stats.generation_time
            total.generated_tokens += stats.generated_tokens
            total.steps += stats.steps
            total.prompt_time += stats.prompt_time
    return totals, wall, arrivals, cache


def step_split(arrivals: list) -> str:
    """The steps' times as the caller sees them: median, slow steps' excess and the first step."""
    gaps = [b - a for times in arrivals for a, b in zip(times, times[1:])]
    median = statistics.median(gaps) if gaps else 0.0
    slow = [gap for gap in gaps if gap > SLOW * median]
    first = sum(times[0] for times in arrivals if times) / len(arrivals)
    return (f"median step {median * 1e3:.2f} ms, {len(slow)} steps over {SLOW:g}x it ({sum(slow) / len(arrivals) * 1e3:.1f}"
            f" ms/prompt, {sum(gap - median for gap in slow) / len(arrivals) * 1e3:.1f} beyond the median), "
            f"request to first step {first * 1e3:.1f} ms/prompt")


def report(number: int, totals: dict, wall: dict, arrivals: dict, cache: dict, prompts: int):
    """Prints a pass: AR's line, then one per ReDrafter shape."""
    ar = totals["ar"]
    outside = {name: (wall[name] - t.generation_time) / prompts * 1e3 for name, t in totals.items()}
    ar_wall = ar.generated_tokens / wall["ar"]
    print(f"pass {number}: AR {ar.generation_tps:.1f} tok/s ({1e3 / ar.generation_tps:.2f} ms/token, prefill "
          f"{ar.prompt_time / prompts * 1e3:.1f} ms/prompt); wall {ar_wall:.1f} tok/s ({outside['ar']:.1f} ms/prompt "
          f"outside the steps)", flush=True)
    for name, rd in totals.items():
        if name in ("ar", "mlx_lm"):
            continue
        rd_wall = rd.generated_tokens / wall[name]
        print(f"pass {number} {name}: {rd.generation_tps:.1f} tok/s ({rd.generation_tps / ar.generation_tps:.2f}x AR), "
              f"{rd.generated_tokens / rd.steps:.2f} tokens/step, {rd.generation_time / rd.steps * 1e3:.2f} ms/step "
              f"(prefill + first draft {rd.prompt_time / prompts * 1e3:.1f} ms/prompt); wall {rd_wall:.1f} tok/s "
              f"({rd_wall / ar_wall:.2f}x AR; {outside[name]:.1f} ms/prompt outside the steps); "
              f"{step_split(arrivals[name])}; cache per prompt: {cache[name]['compact'] / prompts:.1f} compactions, "
              f"{cache[name]['grow'] / prompts:.1f} growths", flush=True)


def main():
    args_parser = parser(__doc__)
    args_parser.add_argument("--beam", type=lambda text: [BeamShape.parse(t) for t in text.split(",")],
                             default=[BeamShape(16, 4)], help="WxL[:N], comma separated (default 16x4)")
    add_prompt_flags(args_parser, 10)
    args_parser.add_argument("--max-tokens", type=int, default=64)
    args_parser.add_argument("--warm-up", action="store_true", help="warm each method up at each prompt-length "
                             "bucket first, as demos.benchmark does")
    args_parser.add_argument("--mlx-lm", action="store_true", help="run mlx-lm's AR after ours on each prompt, as "
                             "demos.benchmark did until 2026-12-07")
    args = args_parser.parse_args()
    engine = load(args)
    prompts = chat_prompts(engine, args.prompts, args.num_prompts)
    options = {"ar": DecodeOptions(mode="ar"), **{str(beam): DecodeOptions(beam=beam) for beam in args.beam}}
    runs = {name: (lambda p, s, o=o: engine.generate(p, max_tokens=args.max_tokens, options=o, stats=s))
            for name, o in options.items()}
    if args.mlx_lm:
        from demos.mlx_lm_runners import mlx_lm_ar

        lm = mlx_lm_ar(engine.files.model_dir, None, DecodeOptions().sampling)
        runs["mlx_lm"] = lambda p, s: lm(p, args.max_tokens, engine.eos_ids)
    for prompt, method in itertools.product(prompts if args.warm_up else [], options.values()):
        engine.warm_up(prompt, method)
    events = counting_cache_events()
    for number in (1, 2):
        report(number, *run_pass(runs, prompts, events), len(prompts))


if __name__ == "__main__":
    main()
