"""python -m convert {model,drafter} SRC OUT [options]"""

import sys
import time

from redrafter_mlx.errors import ArgumentParser, run_cli

from .convert import convert_drafter, convert_target


def build_parser():
    p = ArgumentParser(prog="python -m convert", description="Convert weights to MLX directories.")
    sub = p.add_subparsers(dest="kind", required=True)
    model = sub.add_parser("model", help="target LLM: HF directory (safetensors/.bin) or .gguf file")
    drafter = sub.add_parser("drafter", help="ReDrafter drafter from Apple's PyTorch checkpoint layout")
    drafter.add_argument("--target", required=True, help="the target model directory (to check sizes)")
    model.add_argument("--tokenizer", help="copy tokenizer files from this HF directory (GGUF sources)")
    model.add_argument("--dequantize", action="store_true",
                       help="store quantized source tensors dense (fastest on CPUs; then -q re-quantizes)")
    for s in (model, drafter):
        s.add_argument("src")
        s.add_argument("out")
        s.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
        s.add_argument("-q", "--q-bits", type=int, choices=(4, 8), help="quantize to this many bits")
        s.add_argument("--q-group-size", type=int, choices=(32, 64, 128), default=64)
        s.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
        s.add_argument("--allow-pickle", action="store_true", help="read pytorch_model*.bin pickles")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    options = dict(dtype=args.dtype, q_bits=args.q_bits, q_group_size=args.q_group_size, force=args.force,
                   allow_pickle=args.allow_pickle)
    start = time.perf_counter()

    def convert():
        if args.kind == "model":
            return convert_target(args.src, args.out, tokenizer=args.tokenizer, dequantize=args.dequantize,
                                  **options)
        return convert_drafter(args.src, args.out, args.target, **options)

    run_cli(lambda: print(f"wrote {convert()} in {time.perf_counter() - start:.1f} s", file=sys.stderr))


if __name__ == "__main__":
    main()
