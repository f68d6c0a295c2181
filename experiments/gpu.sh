#!/usr/bin/env bash
# Drafter training and benchmarks on an NVIDIA GPU machine (MLX CUDA) that has no network.
# Run after `source .devsetup.sh` (MLX's CUDA wheel, ../shared/device) with REPO=the checkout,
# from any directory holding the code to run (e.g. a copy of a fixed commit: the checkout
# may change between runs). Models travel as ~60 MB parts of their MLX directories:
# $REPO/.dev/NAME/pNN/FILE.partNNN and .dev/NAME/meta/ (config, tokenizer) with
# .dev/NAME/MANIFEST.txt (each file's sha256).
#   STAGE=stash NAME=q15 PART=p03   copies one part folder to /tmp/parts/NAME/
#   STAGE=assemble NAME=q15         joins the parts into /tmp/models/NAME (checksums checked)
#   STAGE=data|fit|bench            below; results in /tmp/res, then STAGE=pack copies them to $OUT
set -euo pipefail
: ${REPO:?the checkout}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
MODELS=/tmp/models RES=/tmp/res DATA=/tmp/data DRAFTERS=/tmp/drafters
mkdir -p $MODELS $RES $DATA $DRAFTERS
case "${STAGE:?}" in
stash)
  mkdir -p /tmp/parts/$NAME && cp $REPO/.dev/$NAME/$PART/* /tmp/parts/$NAME/ ;;
assemble)  # F16=1: also a float16 copy (dequantized: fast batched generation and training features)
  out=$MODELS/$NAME && mkdir -p $out.tmp && cp $REPO/.dev/$NAME/meta/* $out.tmp/
  for base in $(ls /tmp/parts/$NAME | sed 's/\.part.*//' | sort -u); do
    cat $(ls /tmp/parts/$NAME/$base.part* | sort) > $out.tmp/$base
    grep -q "$(sha256sum $out.tmp/$base | cut -d' ' -f1)" $REPO/.dev/$NAME/MANIFEST.txt || { echo "checksum of $base differs"; exit 1; }
  done
  rm -rf $out && mv $out.tmp $out && ls -la $out
  if [ "${F16:-0}" = 1 ]; then python3 -m convert model $out $out-f16 --dequantize --dtype float16 --force; fi ;;
data)  # MODEL (a name in /tmp/models), PROMPTS (a file), OUTNAME, SECONDS, NEW, BATCH, SAMPLE_TEMP, SEED
  python3 -m redrafter_mlx.train data --model $MODELS/$MODEL --dtype float16 --prompts $PROMPTS --all-turns \
    --out $DATA/$OUTNAME --num-prompts ${NUM_PROMPTS:-100000} --max-prompt-tokens ${PROMPT_TOKENS:-256} \
    --max-new-tokens ${NEW:-256} --batch-size ${BATCH:-512} --max-seconds ${SECONDS_BUDGET:-300} \
    --temp ${SAMPLE_TEMP:-0} --seed ${SEED:-0} 2>&1 | tee $RES/data_$OUTNAME.log | grep -v '"shard"' || true
  cp $DATA/$OUTNAME/info.json $RES/data_info_$OUTNAME.json ;;
fit)  # MODEL, DATANAMES (names in /tmp/data), OUTNAME, FIT_ARGS (more fit flags, e.g. --also ...), FIT_SECONDS
  dirs=$(for d in $DATANAMES; do echo $DATA/$d; done)
  timeout ${FIT_SECONDS:-560} python3 -m redrafter_mlx.train fit --model $MODELS/$MODEL --dtype float16 \
    --data $dirs --out $DRAFTERS/$OUTNAME --batch-tokens ${BATCH_TOKENS:-16384} --log-every 50 \
    --checkpoint-every ${CKPT:-200} ${RESUME:+--resume} $FIT_ARGS 2>&1 | tee -a $RES/fit_$OUTNAME.log || true
  for d in $DRAFTERS/*/; do [ -f $d/training.json ] && mkdir -p $RES/drafters && cp -r $d $RES/drafters/; done; true ;;
bench)  # MODEL, DRAFTER (a directory), PROMPTS (mtbench|humaneval|file), BENCH_ARGS, TAG
  timeout ${BENCH_SECONDS:-540} python3 -m demos.benchmark --model $MODELS/$MODEL --drafter $DRAFTER \
    --prompts $PROMPTS $BENCH_ARGS --out-dir $RES/bench_$TAG 2>&1 | grep -v "prompt .* done" | tail -30 || true ;;
pack)  # WHAT: paths under /tmp (e.g. "res/drafters/a res/fit_a.log"; at most ~60 MB compressed) as
       # $OUT/$TAG.tgz.part_XX of 15 MB: `cat TAG.tgz.part_* | tar xz` here
  tar czf - -C /tmp $WHAT | split -b 15M - $OUT/${TAG:-results}.tgz.part_
  ls -la $OUT ;;
esac
