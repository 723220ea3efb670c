"""Triton-lang kernels of the GPU engine: implicit-GEMM convolution on NHWC tensors with a fused epilogue.

One kernel computes, for an output tile of (pixels x output channels):

    y = conv(x, w) [* in_scale * w_scale[oc]]  + bias[oc]  [+ residual [* res_scale]]  [ReLU]  [-> int8]

* FP16: fp16 activations and weights, fp32 accumulation, fp16 output.
* INT8: int8 activations (per-tensor scale) and weights (per-output-channel scale), int32 accumulation,
  dequantize + bias + residual + ReLU in fp32, then requantize to int8 (or store fp16 for the head).

The GEMM view: M = N*OH*OW output pixels, N = output channels, K = KH*KW*C, walked as (kh, kw, channel
block) so each K step reads one contiguous channel slice of one input pixel. Weights are stored
[KH, KW, C, OC] (K-major rows). Run on the CPU with TRITON_INTERPRET=1 for the correctness tests.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def conv2d_nhwc_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    res_ptr,
    out_ptr,
    w_scale_ptr,
    N,
    H,
    W,
    C,
    OH,
    OW,
    OC,
    in_scale,
    res_scale,
    out_inv_scale,
    STRIDE: tl.constexpr,
    PAD: tl.constexpr,
    KH: tl.constexpr,
    KW: tl.constexpr,
    HAS_RES: tl.constexpr,
    RELU: tl.constexpr,
    INT8: tl.constexpr,
    OUT_INT8: tl.constexpr,
    RES_INT8: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_c = tl.arange(0, BK)
    m_mask = offs_m < N * OH * OW
    n_mask = offs_n < OC
    ow = offs_m % OW
    oh = (offs_m // OW) % OH
    nb = offs_m // (OW * OH)
    if INT8:
        acc = tl.zeros((BM, BN), dtype=tl.int32)
    else:
        acc = tl.zeros((BM, BN), dtype=tl.float32)
    for kh in range(KH):
        ih = oh * STRIDE - PAD + kh
        for kw in range(KW):
            iw = ow * STRIDE - PAD + kw
            valid = m_mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            pixel = ((nb * H + ih) * W + iw) * C
            for c0 in range(0, C, BK):
                cc = c0 + offs_c
                c_mask = cc < C
                a = tl.load(x_ptr + pixel[:, None] + cc[None, :], mask=valid[:, None] & c_mask[None, :], other=0)
                rows = (kh * KW + kw) * C + cc
                b = tl.load(
                    w_ptr + rows[:, None] * OC + offs_n[None, :], mask=c_mask[:, None] & n_mask[None, :], other=0
                )
                if INT8:
                    acc += tl.dot(a, b, out_dtype=tl.int32)
                else:
                    acc += tl.dot(a, b)
    if INT8:
        w_scale = tl.load(w_scale_ptr + offs_n, mask=n_mask, other=0.0)
        y = acc.to(tl.float32) * (in_scale * w_scale)[None, :]
    else:
        y = acc
    y += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0)[None, :]
    out_offs = offs_m[:, None] * OC + offs_n[None, :]
    out_mask = m_mask[:, None] & n_mask[None, :]
    if HAS_RES:
        r = tl.load(res_ptr + out_offs, mask=out_mask, other=0).to(tl.float32)
        if RES_INT8:
            r = r * res_scale
        y += r
    if RELU:
        y = tl.maximum(y, 0.0)
    if OUT_INT8:
        q = tl.floor(y * out_inv_scale + 0.5)  # round half up, then saturate
        q = tl.minimum(tl.maximum(q, -128.0), 127.0)
        tl.store(out_ptr + out_offs, q.to(tl.int8), mask=out_mask)
    else:
        tl.store(out_ptr + out_offs, y.to(tl.float16), mask=out_mask)


# Tile configurations tried by the autotuner at build time (BM, BN, BK, num_warps, num_stages).
# On the CPU interpreter only DEFAULT_CONFIG is used (its timings mean nothing there).
DEFAULT_CONFIG = {"BM": 64, "BN": 64, "BK": 32, "num_warps": 4, "num_stages": 3}
CANDIDATE_CONFIGS = [
    {"BM": bm, "BN": bn, "BK": bk, "num_warps": warps, "num_stages": stages}
    for bm, bn, bk, warps, stages in (
        (64, 64, 32, 4, 3),
        (128, 64, 32, 4, 3),
        (64, 128, 32, 4, 3),
        (128, 128, 32, 8, 3),
        (128, 64, 64, 4, 4),
        (128, 128, 64, 8, 4),
        (256, 64, 32, 8, 3),
        (64, 32, 32, 2, 4),
        (32, 64, 32, 2, 4),
        (128, 256, 64, 8, 3),
    )
]


# A short list for a tuning run with little time (the prepared GPU check): the shapes that won most often.
QUICK_CONFIGS = [CANDIDATE_CONFIGS[i] for i in (0, 1, 3, 7)]


def conv2d(
    x,
    weight,
    bias,
    out,
    *,
    stride: int,
    pad: int,
    kh: int,
    kw: int,
    relu: bool,
    residual=None,
    w_scale=None,
    in_scale: float = 1.0,
    res_scale: float = 1.0,
    out_scale: float | None = None,
    config: dict | None = None,
) -> None:
    """Launch the fused convolution. ``x``: [N, H, W, C]; ``weight``: [KH*KW*C, OC]; ``out``: [N, OH, OW, OC].

    INT8 when ``x`` is int8 (then ``w_scale`` is required); int8 output when ``out_scale`` is given.
    """
    import torch

    cfg = config or DEFAULT_CONFIG
    n, h, w, c = x.shape
    _, oh, ow, oc = out.shape
    int8 = x.dtype == torch.int8
    if int8 and w_scale is None:
        raise ValueError("int8 convolution needs per-channel weight scales")
    if (oh, ow) != ((h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1):
        raise ValueError(
            f"output {tuple(out.shape)} does not match input {tuple(x.shape)}, kernel {kh}x{kw}, "
            f"stride {stride}, pad {pad}"
        )
    grid = (triton.cdiv(n * oh * ow, cfg["BM"]), triton.cdiv(oc, cfg["BN"]))
    conv2d_nhwc_kernel[grid](
        x,
        weight,
        bias,
        residual if residual is not None else out,
        out,
        w_scale if w_scale is not None else bias,
        n,
        h,
        w,
        c,
        oh,
        ow,
        oc,
        float(in_scale),
        float(res_scale),
        float(1.0 / out_scale) if out_scale else 1.0,
        STRIDE=stride,
        PAD=pad,
        KH=kh,
        KW=kw,
        HAS_RES=residual is not None,
        RELU=relu,
        INT8=int8,
        OUT_INT8=out_scale is not None,
        RES_INT8=residual is not None and residual.dtype == torch.int8,
        BM=cfg["BM"],
        BN=cfg["BN"],
        BK=cfg["BK"],
        num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"],
    )
