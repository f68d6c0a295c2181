#!/usr/bin/env bash
# Trains the default drafter on the lent H100 (MLX CUDA); docs/training.md has the calls.
# Run on the device machine from the repo root after `source .devsetup.sh`, with the
# converted default model (q4-float16, `python -m convert model <gguf> ...`) carried as
# parts: .dev/p1..p3 copied to /tmp/p1..p3 by earlier calls, .dev/p4 in this
# one, plus .dev/sharegpt_prompts.json. STAGE=data|fit|bench; results go to $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
Q4=/tmp/smollm2 F16=/tmp/smollm2-f16 F32=/tmp/smollm2-f32
if [ ! -f $Q4/model.safetensors ]; then
  mkdir -p $Q4
  cat /tmp/p1/* /tmp/p2/* /tmp/p3/* .dev/p4/model.safetensors.part4 > $Q4/model.safetensors
  cp .dev/p4/*.json $Q4/
  python3 -m convert model $Q4 $F16 --dequantize --dtype float16   # fast batched generation
  python3 -m convert model $Q4 $F32 --dequantize --dtype float32   # the CPU runtime's numerics
fi
case "${STAGE:-data}" in
data)
  python3 -m redrafter_mlx.train data --model $F16 --prompts .dev/sharegpt_prompts.json --out /tmp/data \
    --num-prompts 9675 --max-prompt-tokens 256 --max-new-tokens 256 --batch-size 256 \
    --max-seconds ${DATA_SECONDS:-400} 2>&1 | grep -v "it/s]" | tee $OUT/data.log
  cp /tmp/data/info.json $OUT/data_info.json ;;
fit)
  python3 -m redrafter_mlx.train fit --model $F32 --data /tmp/data --out $OUT/drafter --epochs ${EPOCHS:-4} \
    --batch-tokens 16384 --log-every 50 --checkpoint-every 100000 2>&1 | grep -v "it/s]" | tee $OUT/fit.log ;;
bench)
  python3 -m demos.benchmark --model $Q4 --drafter ${DRAFTER:-redrafter_mlx/drafters/smollm2-135m-instruct} \
    --prompts .dev/mtbench.jsonl --num-prompts ${PROMPTS:-80} --max-tokens ${TOKENS:-128} \
    --widths ${WIDTHS:-1,4,16} --lengths ${LENGTHS:-4,5} --out-dir $OUT/bench 2>&1 | grep -v "prompt .* done" | tail -12 ;;
esac
