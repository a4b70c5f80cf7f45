"""Meaningful inputs for the real models whose outputs are degenerate on noise.

Usage: make_inputs.py OUTDIR

Writes:
  silero_vad_16k_op15.npz, silero_vad.npz, silero_vad_op18_ifless.npz:
                            512 samples of noise, a zero state and sr=16000 (the
                            model branches on sr; random integers would take the
                            8 kHz branch);
  silero_quiet_16k.npz, silero_quiet_8k.npz:
                            a chunk of each rate's length (512 and 256 samples)
                            drawn normal at a tenth of full scale, as speech is
                            (the level verification draws random waveforms at),
                            a zero state and sr=16000 or 8000: each of silero's
                            two networks;
  ch_PP-OCRv4_det_infer.npz, PP-OCRv6_det_small.npz:
                            a 64x96 image of dark strokes on a light background
                            (on pure noise the detector outputs ~1e-9 everywhere,
                            so no comparison of its outputs means anything);
  ch_PP-OCRv4_rec_infer.npz, PP-OCRv6_rec_small.npz:
                            a 48x320 text line of the same strokes (the
                            recogniser's input height is fixed at 48);
  ch_ppocr_mobile_v2.0_cls_infer.npz: a 48x192 text line (the classifier's input size).
"""
import os
import sys

import numpy as np


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    silero = dict(input=rng.standard_normal((1, 512)).astype(np.float32),
                  state=np.zeros((2, 1, 128), np.float32),
                  sr=np.array(16000, dtype=np.int64))
    for name in ("silero_vad_16k_op15.npz", "silero_vad.npz", "silero_vad_op18_ifless.npz"):
        np.savez(os.path.join(out, name), **silero)
    quiet = np.random.default_rng(1)
    for rate, length in ((16000, 512), (8000, 256)):
        np.savez(os.path.join(out, f"silero_quiet_{rate // 1000}k.npz"),
                 input=(0.1 * quiet.standard_normal((1, length))).astype(np.float32),
                 state=np.zeros((2, 1, 128), np.float32),
                 sr=np.array(rate, dtype=np.int64))
    x = np.full((1, 3, 64, 96), 2.0, np.float32)
    for r in range(6):
        y0, x0 = 8 + r % 3 * 18, 6 + (r // 3) * 44
        for k in range(6):
            x[0, :, y0 + 2:y0 + 12, x0 + k * 6:x0 + k * 6 + 3] = -2.0
    np.savez(os.path.join(out, "ch_PP-OCRv4_det_infer.npz"), x=x)
    np.savez(os.path.join(out, "PP-OCRv6_det_small.npz"), x=x)
    np.savez(os.path.join(out, "ch_PP-OCRv4_rec_infer.npz"), x=text_line(48, 320))
    np.savez(os.path.join(out, "PP-OCRv6_rec_small.npz"), x=text_line(48, 320))
    np.savez(os.path.join(out, "ch_ppocr_mobile_v2.0_cls_infer.npz"), x=text_line(48, 192))


def text_line(height, width):
    """Dark glyph-like strokes on a light background, normalised to [-1, 1] as
    PaddleOCR's preprocessing does."""
    x = np.full((1, 3, height, width), 1.0, np.float32)
    for c in range(width // 16):
        x0 = 4 + c * 16
        x[0, :, 10:38, x0:x0 + 2] = -1.0  # a vertical stroke
        y = 12 + (c * 7) % 22
        x[0, :, y:y + 2, x0:x0 + 10] = -1.0  # a horizontal one at a varying height
    return x


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
