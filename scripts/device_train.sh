#!/usr/bin/env bash
# Trains the default drafter on the lent H100 (MLX CUDA). Run on the device machine from the
# repo root after `source .devsetup.sh`, with the converted default model's files carried in
# .dev/m1, .dev/m2 (copied to /tmp/m1, /tmp/m2 by earlier calls), .dev/m3 (model.safetensors split in parts) and .dev/sharegpt_prompts.json.
# Writes the drafter and logs into $OUT. See docs/training.md for the exact calls.
set -euo pipefail
MODEL=/tmp/smollm2
mkdir -p $MODEL
cat /tmp/m1/model.safetensors.part* /tmp/m2/model.safetensors.part* .dev/m3/model.safetensors.part* > $MODEL/model.safetensors
cp .dev/m3/*.json $MODEL/
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m redrafter_mlx.train data --model $MODEL --prompts .dev/sharegpt_prompts.json --out /tmp/data \
  --num-prompts ${NUM_PROMPTS:-9675} --max-new-tokens ${MAX_NEW:-256} --batch-size ${GEN_BATCH:-256} \
  --max-seconds ${DATA_SECONDS:-200} 2>&1 | grep -v "it/s]" | tee $OUT/data.log
cp /tmp/data/info.json $OUT/data_info.json
python3 -m redrafter_mlx.train fit --model $MODEL --data /tmp/data --out $OUT/drafter \
  --epochs ${EPOCHS:-3} --batch-tokens ${BATCH_TOKENS:-16384} --log-every 50 2>&1 | grep -v "it/s]" | tee $OUT/fit.log
