#!/usr/bin/env bash
# Generator ablation (issue #12): one change at a time, same seed, same budget, same rendered data,
# scored on both shared real sets by benchmarks/sim2real.py. Rows go to benchmarks/results/ablation.md
# (raw numbers in ablation.jsonl); each trained generator is kept in $ABLATION_DIR, and a row whose
# model is already there is skipped, so a killed queue resumes where it stopped.
#
#   ABLATION_DIR=~/runs/ablation nohup benchmarks/ablation.sh > ~/runs/ablation/queue.log 2>&1 &
#   python benchmarks/score_checkpoints.py ~/runs/ablation/*.keras --out benchmarks/results/ablation_scores.jsonl
#
# About 25 minutes a row on 2 CPU cores (1,000 steps of batch 8 on 128x128 crops, then scoring).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${ABLATION_DIR:-$HOME/runs/ablation}
steps=${ABLATION_STEPS:-1000}
mkdir -p "$dir"
# The v3 window style with 20% dry pairs: what the shipped restoration model was trained on.
drops='{"radius_range":[0.015,0.12],"view_tilt_range":[0.2,0.6],"contrast_range":[0.2,0.6],"haze_range":[0.2,0.5],"opacity_range":[0.75,1.0],"density":0.5,"tail":0.15,"elongation":1.15,"blur_range":[0.015,0.05],"shape_noise":0.08,"dry_fraction":0.2}'

row() {  # label arch config name [lens-style overrides [lens fraction]]
    if [ -f "$dir/$4.keras" ]; then echo "skip $4 (kept model found)"; return; fi
    echo "== $(date +%T) $1"
    lens=${5:-'{}'}
    lens_fraction=${6:-0.25}
    python benchmarks/sim2real.py --label "$1" --arch "$2" --config "$3" --seed 0 --steps "$steps" \
        --options "$drops" --lens-fraction "$lens_fraction" --lens-options "$lens" \
        --out benchmarks/results/ablation.md --keep "$dir/$4.part.keras"
    mv "$dir/$4.part.keras" "$dir/$4.keras"
}

# In order of what decides most: the baseline, the preset, the preset's generator alone, the contrastive loss.
row "A: Pix2Pix + penalties (L1 100, adversarial 1)" pix2pix '{}' a_pix2pix
row "E: restoration preset (B + mask BCE + 1-SSIM + FFT)" restoration '{}' e_preset
row "B: restoration generator (mask-guided residual, resize-conv), Charbonnier 100 + adversarial 1" \
    restoration '{"ssim_weight":0,"fft_weight":0,"mask_weight":0}' b_residual
row "F: E + PatchNCE (weight 1)" restoration '{"nce_weight":1.0}' f_nce
# Data, not the generator: the same preset with the lens style's veiling glare (veil_range, session 7).
# The veil is in LENS_STYLE's defaults since 0a710b6, so the E row above, rerun from now on, has it too.
row "G: E with the lens veil (veil_range 0-0.12 in lens batches)" restoration '{}' g_veil
# The generator's correction as a local gain + offset instead of an offset alone (session 8).
row "H: G + the local affine head (correction = gain * rainy + offset)" restoration '{"affine":true}' h_affine
# Sharp, opaque lens drops with dark rims (session 9): the lens style matched to the real lens pairs'
# drop statistics (benchmarks/results/realism.md); the window style is unchanged.
lens_v6='{"blur_range":[0.0,0.02],"density":1.0,"radius_range":[0.02,0.4],"gain_range":[0.9,1.4],"contrast_range":[0.1,0.4],"haze_range":[0.0,0.2],"opacity_range":[0.95,1.0],"softness_range":[0.03,0.15],"rim_darkening":1.0,"contact_angle_range":[40.0,60.0],"view_tilt_range":[0.2,0.6],"glow":0.03,"smear":0.03,"shape_noise":0.12,"elongation":1.2,"tail":0.3}'
row "I: H with sharp, opaque lens drops (v6 lens style)" restoration '{"affine":true}' i_lens_v6 "$lens_v6"
# Row I's trade (lens up, Raindrop down), with fewer lens batches: 10% rather than 25%.
row "J: I with 10% lens batches" restoration '{"affine":true}' j_lens_v6_10 "$lens_v6" 0.10
# The first-generation renderer's drops (bright, soft-edged, low-contrast, nearly sharp; no glow or veil),
# drawn by today's renderer as the second style (session 10; sim2real.md found they teach the lens pairs most).
lens_v1like='{"density":0.4,"radius_range":[0.01,0.12],"shape_noise":0.05,"elongation":1.3,"tail":0.15,"contact_angle_range":[30.0,45.0],"view_tilt_range":[0.0,0.0],"gain_range":[1.1,1.4],"contrast_range":[0.35,0.7],"haze_range":[0.05,0.3],"opacity_range":[0.75,1.0],"softness_range":[0.15,0.6],"rim_darkening":0.5,"highlight":0.15,"blur_range":[0.005,0.025],"smear":0.0,"glow":0.0,"veil_range":[0.0,0.0],"dry_fraction":0.0}'
row "K: H with v1-like drops as the second style (25% of batches)" restoration '{"affine":true}' k_v1like "$lens_v1like"
# Context (session 11): the same pixels per step as 2 crops of 256x256 instead of 8 of 128x128. A large
# defocused Raindrop drop (radius up to 0.12 x 480 px) nearly fills a 128 crop, so a model trained on
# 128 crops rarely sees a drop with its surroundings.
row "L: H on 256x256 crops, batch 2" restoration '{"affine":true,"crop_size":256,"batch_size":2}' l_h_crop256
row "M: I on 256x256 crops, batch 2" restoration '{"affine":true,"crop_size":256,"batch_size":2}' m_i_crop256 "$lens_v6"
row "C: B + mask BCE 20" restoration '{"ssim_weight":0,"fft_weight":0}' c_mask
row "D: C + 1-SSIM 40" restoration '{"fft_weight":0}' d_ssim
echo "== $(date +%T) done"
