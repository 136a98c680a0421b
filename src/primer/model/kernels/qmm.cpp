// y = x @ W^T on GGUF-style block-quantized weights, fp32 in and out: primer's fast CPU matmul.
//
// Why a kernel of our own: torch's weight-only int4 CPU kernel takes bf16 activations, keeps the
// block scales in bf16 and rounds its output to bf16 (0.4% relative error per output, enough to flip
// near-tied greedy tokens against the fp32 reference), and it reads the weights once per row, so a
// batch of B rows costs B times the weight traffic. Here:
//   * the weights are the file's blocks of 32 (Q4_0/Q4_1: 4-bit codes q, w = d*q + m; Q8_0: int8
//     codes, w = d*q) with their fp16 scales, multiplied in fp32: the result is the fp32 reference's
//     up to summation order, and the weights take the file's 0.625 (Q4_1) / 1.06 (Q8_0) bytes each;
//   * a block is dequantized once per tile of rows (decode), or once per panel into a cache-resident
//     buffer that every row then reads (prefill, big batches), so B rows read the weights once;
//   * both paths multiply and add in the same order, so a row's output does not depend on how many
//     rows share the call (a request's text does not depend on its batch).
//   * decode steps (`act8`) may instead quantize each row of x to int8 once per call, per block of
//     32 like llama.cpp's Q8_1 (scale dx = max|x|/127, and dx * sum of the codes), and multiply with
//     VNNI (vpdpbusd: 64 u8 x s8 products a instruction, 4 times the fp32 FMA's): the block dot is
//     dw*dx*sum(q*xq) + m*dx*sum(xq), exact in int32 inside a block. CPUs without AVX-512 VNNI run
//     the fp32 path instead. Rows are quantized alone, so a row's result still does not depend on
//     its batch.
// Layout (made by `pack_q4` / `pack_q8` in primer/model/kernels/__init__.py): outputs in groups of 16
// (one AVX-512 vector), each 64-byte vector in VNNI order (lane n = 4 consecutive k of output n):
//   Q4 codes (N/16, K/32, 4, 16, 4) bytes: [g, b, t, n, j] = q[16g+n, 32b+4t+j] | q[16g+n, 32b+16+4t+j] << 4
//   Q8 codes (N/16, K/32, 8, 16, 4) int8:  [g, b, t, n, j] = q[16g+n, 32b+4t+j]
//   scales d, mins m (N/16, K/32, 16) fp16 (the file's own; converted to fp32 in registers).
// Needs AVX-512F (the caller checks; elsewhere it uses torch's kernels).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

namespace {

constexpr int64_t G = 32;   // block size along K
constexpr int NV = 2;       // 16-output vectors per tile (32 outputs)
constexpr int64_t DIRECT_MAX_ROWS = 32;  // above: dequantize a panel once per block of rows and reuse it for them
constexpr int64_t PANEL_ROW_BYTES = 512 * 1024;  // activation rows per pass over the panels (L2 is 2 MB a core)

// The codes of one block, 16 outputs, in VNNI order (see the layout above): 64-byte vectors whose
// 32-bit lane n holds 4 consecutive k of output n. `pair` gives elements k and k+16 (k = 4t + j) of
// the 16 outputs as floats, for the fp32 path.
struct Q4 {
  static constexpr int64_t block_bytes = 256;
  static inline void pair(const uint8_t* p, int t, int j, __m512& lo, __m512& hi) {
    const __m512i c = _mm512_srli_epi32(_mm512_loadu_si512(p + 64 * t), 8 * j);
    lo = _mm512_cvtepi32_ps(_mm512_and_si512(c, _mm512_set1_epi32(15)));
    hi = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(c, 4), _mm512_set1_epi32(15)));
  }
};

struct Q8 {
  static constexpr int64_t block_bytes = 512;
  static inline void pair(const uint8_t* p, int t, int j, __m512& lo, __m512& hi) {
    // byte j of each lane, sign-extended: shift it to the top, then arithmetic-shift it down
    lo = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(_mm512_loadu_si512(p + 64 * t), 24 - 8 * j), 24));
    hi = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(_mm512_loadu_si512(p + 64 * (t + 4)), 24 - 8 * j), 24));
  }
};

struct Weights {
  const uint8_t* codes;
  const at::Half* d;
  const at::Half* m;  // null for Q8
  int64_t nb;         // blocks along K
};

// 16 fp16 scales (the file's own) -> fp32
inline __m512 scales16(const at::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

constexpr int64_t PREFETCH_BLOCKS = 4;  // codes this many blocks ahead are requested from memory

// MT rows x (NV*16) outputs starting at group g, dequantizing in registers: w = d*q + m (one fma),
// then acc += w * x in the order k = 0, 16, 1, 17, ... of each block, the same order the panel path
// uses, so a row's result is the same bits whatever the number of rows.
template <typename Q, int MT>
inline void tile_direct(const float* x, int64_t K, const Weights& w, int64_t g, float* y, int64_t N) {
  __m512 acc[MT][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MT; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t b = 0; b < w.nb; ++b) {
    const uint8_t* p[NV];
    __m512 dv[NV], mv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      p[v] = w.codes + ((g + v) * w.nb + b) * Q::block_bytes;
      const int64_t s = ((g + v) * w.nb + b) * 16;
      dv[v] = scales16(w.d + s);
      mv[v] = w.m ? scales16(w.m + s) : _mm512_setzero_ps();
      for (int64_t l = 0; l < Q::block_bytes; l += 64)
        _mm_prefetch(reinterpret_cast<const char*>(p[v] + PREFETCH_BLOCKS * Q::block_bytes + l), _MM_HINT_T0);
    }
    for (int t = 0; t < 4; ++t)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const int k = 4 * t + j;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        __m512 lo, hi;
        Q::pair(p[v], t, j, lo, hi);
        lo = _mm512_fmadd_ps(lo, dv[v], mv[v]);
        hi = _mm512_fmadd_ps(hi, dv[v], mv[v]);
#pragma GCC unroll 16
        for (int r = 0; r < MT; ++r) {
          const float* xr = x + r * K + b * G;
          acc[r][v] = _mm512_fmadd_ps(lo, _mm512_set1_ps(xr[k]), acc[r][v]);
          acc[r][v] = _mm512_fmadd_ps(hi, _mm512_set1_ps(xr[k + 16]), acc[r][v]);
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MT; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(y + r * N + 16 * (g + v), acc[r][v]);
}

// Dequantize groups g..g+NV-1 into panel[p][NV*16], p = 32b + 2k (element k of block b) and
// 32b + 2k + 1 (element k + 16): the order the direct path multiplies in.
template <typename Q>
inline void dequant_panel(const Weights& w, int64_t g, float* panel) {
  #pragma GCC unroll 16
  for (int v = 0; v < NV; ++v)
    for (int64_t b = 0; b < w.nb; ++b) {
      const uint8_t* p = w.codes + ((g + v) * w.nb + b) * Q::block_bytes;
      const int64_t s = ((g + v) * w.nb + b) * 16;
      const __m512 dv = scales16(w.d + s);
      const __m512 mv = w.m ? scales16(w.m + s) : _mm512_setzero_ps();
      for (int t = 0; t < 4; ++t)
      #pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const int k = 4 * t + j;
        __m512 lo, hi;
        Q::pair(p, t, j, lo, hi);
        _mm512_storeu_ps(panel + (b * G + 2 * k) * (NV * 16) + 16 * v, _mm512_fmadd_ps(lo, dv, mv));
        _mm512_storeu_ps(panel + (b * G + 2 * k + 1) * (NV * 16) + 16 * v, _mm512_fmadd_ps(hi, dv, mv));
      }
    }
}

// Rows x (NV*16) outputs over panel rows k0..k1 (k-major, NV*16 floats each); `first` starts the
// sums, later chunks add to what y holds (the chunk of the panel stays in L1 across all rows).
template <int MT>
inline void tile_panel(const float* x, int64_t K, const float* panel, int64_t k0, int64_t k1, bool first,
                       int64_t g, float* y, int64_t N) {
  __m512 acc[MT][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MT; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v)
      acc[r][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(y + r * N + 16 * (g + v));
  for (int64_t k = k0; k < k1; ++k) {
    const int64_t xk = (k & ~int64_t(31)) + ((k & 31) >> 1) + (k & 1) * 16;  // panel row -> element of x
    __m512 wv[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(panel + k * (NV * 16) + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < MT; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * K + xk]);
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(wv[v], xv, acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MT; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(y + r * N + 16 * (g + v), acc[r][v]);
}

template <typename Q>
void rows_direct(const float* x, int64_t M, int64_t K, const Weights& w, int64_t g, float* y, int64_t N) {
  int64_t r = 0;
  for (; r + 4 <= M; r += 4) tile_direct<Q, 4>(x + r * K, K, w, g, y + r * N, N);
  switch (M - r) {
    case 3: tile_direct<Q, 3>(x + r * K, K, w, g, y + r * N, N); break;
    case 2: tile_direct<Q, 2>(x + r * K, K, w, g, y + r * N, N); break;
    case 1: tile_direct<Q, 1>(x + r * K, K, w, g, y + r * N, N); break;
    default: break;
  }
}

constexpr int64_t KC = 128;  // panel rows per chunk: 128 x 32 floats = 16 KB, L1-resident

void rows_panel(const float* x, int64_t M, int64_t K, const float* panel, int64_t g, float* y, int64_t N) {
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t k1 = std::min(K, k0 + KC);
    const bool first = k0 == 0;
    int64_t r = 0;
    for (; r + 6 <= M; r += 6) tile_panel<6>(x + r * K, K, panel, k0, k1, first, g, y + r * N, N);
    switch (M - r) {
      case 5: tile_panel<5>(x + r * K, K, panel, k0, k1, first, g, y + r * N, N); break;
      case 4: tile_panel<4>(x + r * K, K, panel, k0, k1, first, g, y + r * N, N); break;
      case 3: tile_panel<3>(x + r * K, K, panel, k0, k1, first, g, y + r * N, N); break;
      case 2: tile_panel<2>(x + r * K, K, panel, k0, k1, first, g, y + r * N, N); break;
      case 1: tile_panel<1>(x + r * K, K, panel, k0, k1, first, g, y + r * N, N); break;
      default: break;
    }
  }
}

// ---- int8 activations and VNNI (compiled for AVX-512 VNNI, run only where the CPU has it) ----
#pragma GCC push_options
#pragma GCC target("avx512vnni")

struct Act8 {
  const int8_t* q;  // (M, K) codes
  const float* d;   // (M, K/32) dx
  const float* s;   // (M, K/32) dx * sum of the block's codes
};

// Row m of x -> its int8 codes, per block of 32: dx = max|x| / 127, q = round(x / dx).
void quantize_row(const float* x, int64_t K, int8_t* q, float* d, float* s) {
  for (int64_t b = 0; b < K / G; ++b) {
    const __m512 a = _mm512_loadu_ps(x + b * G), c = _mm512_loadu_ps(x + b * G + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(c)));
    const float dx = amax / 127.f;
    const __m512 inv = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
    const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inv)), qc = _mm512_cvtps_epi32(_mm512_mul_ps(c, inv));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * G), _mm512_cvtsepi32_epi8(qa));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * G + 16), _mm512_cvtsepi32_epi8(qc));
    d[b] = dx;
    s[b] = dx * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(qa, qc)));
  }
}

constexpr int NVI = 2;  // 16-output vectors per int8 tile

// MT rows x (NVI*16) outputs at group g: per block, int32 sums of u8 weight codes x s8 activation
// codes (exact), then acc += sum * (dw*dx) + m * (dx*sum xq) in fp32 -- the same operations for a
// row whatever MT, so its bits do not depend on the batch. Q8 codes are s8: they are read as
// u8 = q + 128 with m = -128 dw, the same form as Q4_1's w = d*q + m.
template <typename Q, int MT>
inline void tile_act8(const Act8& x, int64_t K, const Weights& w, int64_t g, float* y, int64_t N) {
  const __m512i nib = _mm512_set1_epi8(15), flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[MT][NVI];
#pragma GCC unroll 16
  for (int r = 0; r < MT; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NVI; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t b = 0; b < w.nb; ++b) {
    const uint8_t* p[NVI];
    __m512 dv[NVI], mv[NVI];
    __m512i is[MT][NVI];
#pragma GCC unroll 16
    for (int v = 0; v < NVI; ++v) {
      p[v] = w.codes + ((g + v) * w.nb + b) * Q::block_bytes;
      const int64_t s = ((g + v) * w.nb + b) * 16;
      dv[v] = scales16(w.d + s);
      mv[v] = w.m ? scales16(w.m + s) : _mm512_mul_ps(dv[v], _mm512_set1_ps(-128.f));
      for (int64_t l = 0; l < Q::block_bytes; l += 64)
        _mm_prefetch(reinterpret_cast<const char*>(p[v] + PREFETCH_BLOCKS * Q::block_bytes + l), _MM_HINT_T0);
#pragma GCC unroll 16
      for (int r = 0; r < MT; ++r) is[r][v] = _mm512_setzero_si512();
    }
    if constexpr (Q::block_bytes == 256) {  // Q4: low nibbles are k = 4t+j, high nibbles k + 16
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t)
#pragma GCC unroll 16
        for (int v = 0; v < NVI; ++v) {
          const __m512i c = _mm512_loadu_si512(p[v] + 64 * t);
          const __m512i lo = _mm512_and_si512(c, nib), hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), nib);
#pragma GCC unroll 16
          for (int r = 0; r < MT; ++r) {
            const int8_t* xr = x.q + r * K + b * G + 4 * t;
            is[r][v] = _mm512_dpbusd_epi32(is[r][v], lo, _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(xr)));
            is[r][v] = _mm512_dpbusd_epi32(is[r][v], hi, _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(xr + 16)));
          }
        }
    } else {  // Q8
#pragma GCC unroll 8
      for (int t = 0; t < 8; ++t)
#pragma GCC unroll 16
        for (int v = 0; v < NVI; ++v) {
          const __m512i c = _mm512_xor_si512(_mm512_loadu_si512(p[v] + 64 * t), flip);
#pragma GCC unroll 16
          for (int r = 0; r < MT; ++r) {
            const int8_t* xr = x.q + r * K + b * G + 4 * t;
            is[r][v] = _mm512_dpbusd_epi32(is[r][v], c, _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(xr)));
          }
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MT; ++r) {
      const __m512 dx = _mm512_set1_ps(x.d[r * w.nb + b]), sx = _mm512_set1_ps(x.s[r * w.nb + b]);
#pragma GCC unroll 16
      for (int v = 0; v < NVI; ++v) {
        acc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[r][v]), _mm512_mul_ps(dv[v], dx), acc[r][v]);
        acc[r][v] = _mm512_fmadd_ps(mv[v], sx, acc[r][v]);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MT; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < NVI; ++v) _mm512_storeu_ps(y + r * N + 16 * (g + v), acc[r][v]);
}

constexpr int MTI = 4;  // rows per int8 tile

template <typename Q>
void rows_act8(const Act8& x, int64_t M, int64_t K, const Weights& w, int64_t g, float* y, int64_t N) {
  const int64_t nb = K / G;
  auto at = [&](int64_t r) { return Act8{x.q + r * K, x.d + r * nb, x.s + r * nb}; };
  int64_t r = 0;
  for (; r + MTI <= M; r += MTI) tile_act8<Q, MTI>(at(r), K, w, g, y + r * N, N);
  switch (M - r) {
    case 3: tile_act8<Q, 3>(at(r), K, w, g, y + r * N, N); break;
    case 2: tile_act8<Q, 2>(at(r), K, w, g, y + r * N, N); break;
    case 1: tile_act8<Q, 1>(at(r), K, w, g, y + r * N, N); break;
    default: break;
  }
}

template <typename Q>
void qmm_act8(const float* xp, int64_t M, int64_t K, const Weights& w, int64_t groups, float* yp, int64_t N) {
  const int64_t nb = K / G;
  std::vector<int8_t> q(M * K);
  std::vector<float> d(M * nb), s(M * nb);
  at::parallel_for(0, M, 64, [&](int64_t m0, int64_t m1) {  // many rows (prompts) on all threads
    for (int64_t m = m0; m < m1; ++m) quantize_row(xp + m * K, K, q.data() + m * K, d.data() + m * nb, s.data() + m * nb);
  });
  const Act8 x{q.data(), d.data(), s.data()};
  at::parallel_for(0, groups / NVI, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) rows_act8<Q>(x, M, K, w, t * NVI, yp, N);
  });
}

#pragma GCC pop_options

bool has_vnni() {
  static const bool yes = __builtin_cpu_supports("avx512vnni");
  return yes;
}

template <typename Q>
at::Tensor qmm(const at::Tensor& x_, const at::Tensor& codes, const at::Tensor& d, const c10::optional<at::Tensor>& m_,
               bool act8) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat && x_.dim() == 2, "qmm: x must be (M, K) float32");
  const at::Tensor x = x_.contiguous();
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK(K % G == 0, "qmm: K must be a multiple of 32");
  const int64_t nb = K / G, groups = d.size(0), N = groups * 16;
  TORCH_CHECK(groups % NV == 0, "qmm: outputs must be a multiple of 32");
  TORCH_CHECK(codes.is_contiguous() && codes.numel() == groups * nb * Q::block_bytes, "qmm: codes do not match the scales");
  TORCH_CHECK(d.is_contiguous() && d.scalar_type() == at::kHalf && d.dim() == 3 && d.size(1) == nb && d.size(2) == 16,
              "qmm: scales must be (N/16, K/32, 16) float16");
  Weights w{reinterpret_cast<const uint8_t*>(codes.data_ptr()), d.data_ptr<at::Half>(), nullptr, nb};
  if (m_.has_value()) {
    TORCH_CHECK(m_->sizes() == d.sizes() && m_->is_contiguous() && m_->scalar_type() == at::kHalf, "qmm: bad mins");
    w.m = m_->data_ptr<at::Half>();
  }
  at::Tensor y = at::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t tiles = groups / NV;
  if (act8 && has_vnni()) {
    qmm_act8<Q>(xp, M, K, w, groups, yp, N);
  } else if (M <= DIRECT_MAX_ROWS) {
    at::parallel_for(0, tiles, 4, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) rows_direct<Q>(xp, M, K, w, t * NV, yp, N);
    });
  } else {
    // Rows in blocks that stay in a core's L2 while every panel passes over them: streaming all M
    // rows past each panel read a 2,000-row prompt batch from memory once per 32 outputs (a packed
    // prefill ran at 0.8x the speed of its prompts alone). A panel is dequantized once per block.
    const int64_t MB = std::max<int64_t>(6, PANEL_ROW_BYTES / (K * 4) / 6 * 6);
    for (int64_t m0 = 0; m0 < M; m0 += MB) {
      const int64_t mb = std::min(MB, M - m0);
      at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
        std::vector<float> panel(K * NV * 16);
        for (int64_t t = t0; t < t1; ++t) {
          dequant_panel<Q>(w, t * NV, panel.data());
          rows_panel(xp + m0 * K, mb, K, panel.data(), t * NV, yp + m0 * N, N);
        }
      });
    }
  }
  return y;
}

}  // namespace

at::Tensor q4_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& d, const at::Tensor& m, bool act8) {
  return qmm<Q4>(x, codes, d, m, act8);
}

at::Tensor q8_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& d, bool act8) {
  return qmm<Q8>(x, codes, d, c10::nullopt, act8);
}

bool act8_available() { return has_vnni(); }
