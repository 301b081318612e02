"""Scores a recording against a reference with PESQ-WB (ITU-T P.862.2).

usage: pesq_wb.py REFERENCE.wav RECORDING.wav

The recording may be longer than the reference and start late: it is
aligned by cross-correlation first. Prints one JSON object:
{"mos_lqo": ..., "lag_ms": ..., "correlation": ...}.
"""

import json
import sys
from math import gcd

import numpy as np
import scipy.io.wavfile as wavfile
import scipy.signal as signal
from pesq import pesq

RATE = 16000


def load(path):
    rate, x = wavfile.read(path)
    x = x.astype(np.float64)
    if x.ndim > 1:
        x = x.mean(axis=1)
    g = gcd(RATE, rate)
    return signal.resample_poly(x, RATE // g, rate // g)


def main():
    reference, recording = load(sys.argv[1]), load(sys.argv[2])
    corr = signal.correlate(recording, reference, mode="full", method="fft")
    lag = int(np.argmax(corr)) - len(reference) + 1
    if lag < 0:
        # The recording missed the start of the speech: that counts as lost.
        recording = np.concatenate([np.zeros(-lag), recording])
    start = max(lag, 0)
    segment = recording[start : start + len(reference)]
    segment = np.pad(segment, (0, len(reference) - len(segment)))
    norm = np.linalg.norm(reference) * max(np.linalg.norm(segment), 1e-9)
    print(
        json.dumps(
            {
                "mos_lqo": float(pesq(RATE, reference, segment, "wb")),
                "lag_ms": lag * 1000.0 / RATE,
                "correlation": float(np.dot(reference, segment) / norm),
            }
        )
    )


if __name__ == "__main__":
    main()
