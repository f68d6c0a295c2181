#!/usr/bin/env bash
# Trains and benchmarks the default drafter on the lent H100 (MLX CUDA); docs/training.md
# lists the calls. Run on the device machine from the repo root after `source .devsetup.sh`,
# with the converted default model (q4-float16, `python -m convert model <gguf> ...`)
# carried as parts: .dev/p1..p3 copied to /tmp/p1..p3 by earlier calls, .dev/p4 in this
# one, plus .dev/sharegpt_human.json and .dev/mtbench.jsonl. STAGE=data|fit|bench|profile
# write to $RES (kept while the machine stays warm); STAGE=pack, last in each call, copies
# weight files to $OUT in 15 MB parts (`cat NAME.part_* > NAME` here) and everything else as
# one results.tgz (at most 8 files of at most 16 MiB come back).
set -euo pipefail
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
Q4=/tmp/smollm2 F16=/tmp/smollm2-f16 F32=/tmp/smollm2-f32 DRAFTERS=/tmp/drafters RES=/tmp/res
mkdir -p $RES
if [ ! -f $Q4/model.safetensors ]; then
  mkdir -p $Q4
  cat /tmp/p1/* /tmp/p2/* /tmp/p3/* .dev/p4/model.safetensors.part4 > $Q4/model.tmp  # parts missing: stop here
  mv $Q4/model.tmp $Q4/model.safetensors
  cp .dev/p4/*.json $Q4/
  python3 -m convert model $Q4 $F16 --dequantize --dtype float16   # fast batched generation
  python3 -m convert model $Q4 $F32 --dequantize --dtype float32   # the CPU runtime's numerics
fi
case "${STAGE:-data}" in
data)  # all human turns of ShareGPT (first turns first), answered until DATA_SECONDS into
       # DATAOUT: greedily, or sampled at SAMPLE_TEMP with SEED (not TEMP: a temp directory)
  python3 -m redrafter_mlx.train data --model $F16 --dtype float16 --prompts .dev/sharegpt_human.json \
    --all-turns --out ${DATAOUT:-/tmp/data} --num-prompts 100000 --max-prompt-tokens 256 \
    --max-new-tokens ${NEW:-384} --batch-size ${BATCH:-1024} --max-seconds ${DATA_SECONDS:-300} \
    --temp ${SAMPLE_TEMP:-0} --seed ${SEED:-0} 2>&1 | tee $RES/data_$(basename ${DATAOUT:-/tmp/data}).log
  cp ${DATAOUT:-/tmp/data}/info.json $RES/data_info_$(basename ${DATAOUT:-/tmp/data}).json ;;
fit)  # NAME, DATADIRS (space separated), HEAD (own|target), LAYERS, EPOCHS, DISTILL, DTYPE (the target's, for its features),
      # FIT_SECONDS (then stop: the held-out accuracies so far stay in the log), CKPT (steps
      # between checkpoints), RESUME=1 (go on from the last one, in a later call), INIT (a
      # name in $DRAFTERS to go on training from), LR and CONTEXT_LAYERS (e.g. 15 or 4,15: target
      # layers the drafter also reads); the drafter stays in $DRAFTERS/$NAME and comes back
  timeout ${FIT_SECONDS:-580} python3 -m redrafter_mlx.train fit --model $F32 --dtype ${DTYPE:-float16} \
    --data ${DATADIRS:-/tmp/data} --out $DRAFTERS/$NAME --head ${HEAD:-own} --layers ${LAYERS:-2} --epochs ${EPOCHS:-4} \
    --distill ${DISTILL:-0} --batch-tokens 16384 --log-every 100 --checkpoint-every ${CKPT:-100000} \
    --lr ${LR:-1e-3} ${INIT:+--init $DRAFTERS/$INIT} ${RESUME:+--resume} ${CONTEXT_LAYERS:+--context-layers $CONTEXT_LAYERS} 2>&1 | tee -a $RES/fit_$NAME.log | grep -v '"loss"' || true
  if [ -d $DRAFTERS/$NAME ]; then mkdir -p $RES/$NAME && cp $DRAFTERS/$NAME/* $RES/$NAME/; fi ;;
bench)  # DRAFTER (a name in $DRAFTERS), 80 MT-Bench prompts, a grid of beam shapes (LOOKUP: min matches
        # of the lookup beam to time, e.g. 0,1); partial results kept
  timeout ${BENCH_SECONDS:-420} python3 -m demos.benchmark --model $Q4 --drafter $DRAFTERS/${DRAFTER:-own} \
    --prompts .dev/mtbench.jsonl --num-prompts ${PROMPTS:-80} --max-tokens ${TOKENS:-64} \
    --widths ${WIDTHS:-1,4,16} --lengths ${LENGTHS:-4,5} ${LOOKUP:+--lookup $LOOKUP} --out-dir $RES/bench_${DRAFTER:-own}${TAG:-} 2>&1 \
    | grep -v "prompt .* done" | tail -14 || true ;;
profile)  # per-phase times of ReDrafter at BEAM against AR (scripts/profile_phases.py)
  python3 scripts/profile_phases.py $Q4 $DRAFTERS/${DRAFTER:-own} ${BEAM:-4x4} 2>&1 | tee $RES/profile_${DRAFTER:-own}.txt ;;
pack)  # DATA=1: also the token shards of DATADIRS, as 15 MB parts of data.tgz (cat them, then untar into /tmp)
  (cd $RES && find . -name "*.safetensors" | while read -r f; do split -b 15M "$f" "$OUT/$(echo "${f#./}" | tr / _).part_"; done
   tar czf $OUT/results.tgz --exclude="*.safetensors" .)
  if [ "${DATA:-0}" = 1 ]; then
    tar czf - -C /tmp $(for d in ${DATADIRS:-/tmp/data}; do basename $d; done) | split -b 15M - $OUT/data.tgz.part_
  fi ;;
esac
