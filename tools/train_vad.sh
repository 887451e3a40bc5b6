#!/usr/bin/env bash
# Regenerate the VAD corpus and retrain the bundled voice-activity model (issue 6).
#
#   tools/train_vad.sh            # from the repository root or anywhere
#   N_TRAIN=20 N_TEST=5 TRAIN_NEG=music=2,tone=2 OUT=runs/vad-smoke MODEL_OUT=/tmp/vad.safetensors TRAIN_ARGS="--set train.epochs=1" \
#       tools/train_vad.sh        # a smoke run that leaves the bundled model alone
#
# Steps (model card: docs/models/vad.md):
#   1. tools/make_vad_corpus.py -> runs/vad-corpus/{train,test,test_neg}.jsonl (seed 1, 1200 + 150 files of
#      10 s + 10 negatives-only files per kind, plus TRAIN_NEG extra negatives-only training files (music and
#      tones from the training programs and generators); the held-out splits depend only on the seed and their
#      index, not on --n-train or --train-neg; about 1.5 min with 2 jobs)
#   2. streamrnn train configs/vad.toml --out runs/vad     (configs/vad.toml reads runs/vad-corpus/train.jsonl)
#   3. install the exported best model as streamrnn/models/vad.safetensors (mode 0644)
#   4. tools/eval_vad.py on the held-out splits: the model beside Silero VAD, TEN VAD and WebRTC VAD (the
#      installed ones; pip install -e '.[bench]'), false alarms per negative kind -> runs/vad/eval_test.{json,md}
# Needs the Debian packages in .ci/run (espeak-ng, sox, ffmpeg, festival + voices, fluidsynth,
# fluid-soundfont-gm, asterisk-core-sounds-*-g722) and the corpus extra (mido). Deterministic: same seed,
# same corpus bytes; the trainer is seeded by train.seed in configs/vad.toml. The bundled model's run:
# corpus 1.5-2.5 min, 10 epochs 18 min, evaluation with every peer about 4 min, on the 2-core development
# machine shared with other jobs.
set -euo pipefail
cd "$(dirname "$0")/.."

CORPUS=runs/vad-corpus   # must match data.train in configs/vad.toml
SEED=${SEED:-1}
N_TRAIN=${N_TRAIN:-1200}
N_TEST=${N_TEST:-150}
N_NEG=${N_NEG:-10}
TRAIN_NEG=${TRAIN_NEG-music=150,tone=100}   # extra negatives-only training files per kind ("" for none)
END_TRIM_MS=${END_TRIM_MS:-30}               # training label runs end this much earlier (multiple of 10 ms)
JOBS=${JOBS:-2}
OUT=${OUT:-runs/vad}
MODEL_OUT=${MODEL_OUT:-streamrnn/models/vad.safetensors}
# Extra `streamrnn train` arguments, e.g. TRAIN_ARGS="--set train.epochs=1" for a smoke run.
read -r -a TRAIN_ARGS <<< "${TRAIN_ARGS:-}"

python tools/make_vad_corpus.py --out "$CORPUS" --n-train "$N_TRAIN" --n-test "$N_TEST" --n-neg "$N_NEG" \
    --seconds 10 --seed "$SEED" --jobs "$JOBS" --train-neg "$TRAIN_NEG" --train-end-trim-ms "$END_TRIM_MS"
streamrnn train configs/vad.toml --out "$OUT" "${TRAIN_ARGS[@]}"
# The trainer exports the best epoch (train.monitor) there, owner-only (0600); the package ships 0644.
install -m 0644 "$OUT/model.safetensors" "$MODEL_OUT"
python tools/eval_vad.py "$CORPUS/test.jsonl" --neg "$CORPUS/test_neg.jsonl" --model "$MODEL_OUT" \
    --breakdown --json "$OUT/eval_test.json" --markdown "$OUT/eval_test.md"
ls -l "$MODEL_OUT"
