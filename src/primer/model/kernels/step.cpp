// The small per-token pieces of a decode step, one call each instead of ~10 torch ops:
// RMSNorm, rotary embedding of the q and k heads in place, and grouped-query attention of each row
// over its own cached positions (which also writes the row's new key and value into the cache).
// Training uses RMSNorm and the rotary too, with RMSNorm's backward and SwiGLU below (primer.model.fused;
// the rotary's backward is the rotary by the opposite angle).
//
// Why: at one token per row the step is made of hundreds of tiny ops, and launching them from Python
// cost more than the matmuls around them (see bench/generate.py's profile). Each row is computed on
// its own, in fp32, in a fixed order: a row's result does not depend on the rows beside it, and
// attention reads exactly the row's positions (no padding to the longest row, no mask).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>
#include <vector>

namespace {

inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

// e^x for 16 lanes (Cephes expf: range reduction by ln 2, degree-6 polynomial; ~1 ulp).
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

}  // namespace

// One row's 1 / sqrt(mean(x^2) + eps), summed in 16 lanes in a fixed order (forward and backward agree).
inline float rms_scale(const float* xr, int64_t C, float eps) {
  __m512 ss = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; c += 16) {
    const __m512 v = _mm512_loadu_ps(xr + c);
    ss = _mm512_fmadd_ps(v, v, ss);
  }
  return 1.f / std::sqrt(hsum(ss) / C + eps);
}

// Rows per task of the row-wise kernels below: a decode step's few rows stay on one thread, a
// prefill's or a training step's thousands are shared out.
constexpr int64_t kRowGrain = 64;

// y = x * rsqrt(mean(x^2) + eps) * w, per row of x (M, C).
at::Tensor rms_norm(const at::Tensor& x_, const at::Tensor& w, double eps) {
  const at::Tensor x = x_.contiguous();
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat && x.size(-1) == w.numel(), "rms_norm: bad input");
  const int64_t C = x.size(-1), M = x.numel() / C;
  TORCH_CHECK(C % 16 == 0, "rms_norm: width must be a multiple of 16");
  at::Tensor y = at::empty_like(x);
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, M, kRowGrain, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* xr = xp + m * C;
      const __m512 r = _mm512_set1_ps(rms_scale(xr, C, static_cast<float>(eps)));
      for (int64_t c = 0; c < C; c += 16)
        _mm512_storeu_ps(yp + m * C + c, _mm512_mul_ps(_mm512_loadu_ps(wp + c), _mm512_mul_ps(_mm512_loadu_ps(xr + c), r)));
    }
  });
  return y;
}

// The gradients of rms_norm for an upstream gradient g (M, C): with xh = x * r and gw = g * w,
// dx = r * (gw - xh * mean(gw * xh)) and dw = sum over rows of g * xh. r is found again from x rather
// than kept from the forward (one pass over a row that is in cache anyway). Each task sums its rows'
// dw on its own, and the tasks' sums are added in task order, so the result does not depend on timing.
std::vector<at::Tensor> rms_norm_backward(const at::Tensor& g_, const at::Tensor& x_, const at::Tensor& w, double eps) {
  const at::Tensor x = x_.contiguous(), g = g_.contiguous();
  TORCH_CHECK(x.scalar_type() == at::kFloat && g.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat &&
              x.sizes() == g.sizes() && x.size(-1) == w.numel(), "rms_norm_backward: bad input");
  const int64_t C = x.size(-1), M = x.numel() / C;
  TORCH_CHECK(C % 16 == 0, "rms_norm_backward: width must be a multiple of 16");
  at::Tensor dx = at::empty_like(x);
  const int64_t tasks = std::max<int64_t>(1, (M + kRowGrain - 1) / kRowGrain);
  at::Tensor part = at::zeros({tasks, C}, x.options());
  const float *xp = x.data_ptr<float>(), *gp = g.data_ptr<float>(), *wp = w.data_ptr<float>();
  float *dp = dx.data_ptr<float>(), *pp = part.data_ptr<float>();
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* dw = pp + t * C;
      for (int64_t m = t * kRowGrain; m < std::min(M, (t + 1) * kRowGrain); ++m) {
        const float *xr = xp + m * C, *gr = gp + m * C;
        const __m512 r = _mm512_set1_ps(rms_scale(xr, C, static_cast<float>(eps)));
        __m512 dot = _mm512_setzero_ps();
        for (int64_t c = 0; c < C; c += 16) {
          const __m512 xh = _mm512_mul_ps(_mm512_loadu_ps(xr + c), r), gv = _mm512_loadu_ps(gr + c);
          dot = _mm512_fmadd_ps(_mm512_mul_ps(gv, _mm512_loadu_ps(wp + c)), xh, dot);
          _mm512_storeu_ps(dw + c, _mm512_fmadd_ps(gv, xh, _mm512_loadu_ps(dw + c)));
        }
        const __m512 mean = _mm512_set1_ps(hsum(dot) / C);
        for (int64_t c = 0; c < C; c += 16) {
          const __m512 xh = _mm512_mul_ps(_mm512_loadu_ps(xr + c), r);
          const __m512 gw = _mm512_mul_ps(_mm512_loadu_ps(gr + c), _mm512_loadu_ps(wp + c));
          _mm512_storeu_ps(dp + m * C + c, _mm512_mul_ps(r, _mm512_fnmadd_ps(xh, mean, gw)));
        }
      }
    }
  });
  return {dx, part.sum(0)};
}

// Rotate-half rotary embedding, in place, on the first `heads` heads of each row of qkv
// (M, >= heads*hs), at position pos[m]; cos/sin tables (T, rd) with duplicated halves.
void rope_(at::Tensor& qkv, const at::Tensor& pos, const at::Tensor& cos, const at::Tensor& sin, int64_t heads, int64_t hs) {
  TORCH_CHECK(qkv.is_contiguous() && qkv.scalar_type() == at::kFloat, "rope_: qkv must be contiguous float32");
  const int64_t M = qkv.size(0), width = qkv.size(1), rd = cos.size(1), half = rd / 2;
  const int64_t* pp = pos.data_ptr<int64_t>();
  const float *cp = cos.data_ptr<float>(), *sp = sin.data_ptr<float>();
  float* q = qkv.data_ptr<float>();
  at::parallel_for(0, M, kRowGrain, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* c = cp + pp[m] * rd;
      const float* s = sp + pp[m] * rd;
      for (int64_t h = 0; h < heads; ++h) {
        float* x = q + m * width + h * hs;
        for (int64_t i = 0; i < half; ++i) {
          const float a = x[i], b = x[i + half];
          x[i] = a * c[i] - b * s[i];
          x[i + half] = b * c[i + half] + a * s[i + half];
        }
      }
    }
  });
}

// One decode step of attention. Row m of qkv (M, (nh + 2*nkv) * hs) holds its roped q, k and v; its
// k and v are written at position pos[m] of cache slot m (kc, vc: (slots, nkv, cap, hs)), then each
// query head attends over positions 0..pos[m] of its kv head. Returns (M, nh * hs).
at::Tensor attend(const at::Tensor& qkv, at::Tensor& kc, at::Tensor& vc, const at::Tensor& pos, int64_t nh, int64_t nkv) {
  TORCH_CHECK(qkv.is_contiguous() && kc.is_contiguous() && vc.is_contiguous(), "attend: inputs must be contiguous");
  TORCH_CHECK(qkv.scalar_type() == at::kFloat && kc.scalar_type() == at::kFloat, "attend: float32 only");
  const int64_t M = qkv.size(0), hs = kc.size(3), cap = kc.size(2), width = qkv.size(1);
  TORCH_CHECK(hs % 16 == 0 && width == (nh + 2 * nkv) * hs && nh % nkv == 0 && M <= kc.size(0), "attend: bad shapes");
  const int64_t rep = nh / nkv, nv = hs / 16;
  const int64_t* pp = pos.data_ptr<int64_t>();
  const float* qp = qkv.data_ptr<float>();
  float *kp = kc.data_ptr<float>(), *vp = vc.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) {
    TORCH_CHECK(pp[m] >= 0 && pp[m] < cap, "attend: position outside the cache");
    for (int64_t g = 0; g < nkv; ++g) {
      const int64_t dst = ((m * nkv + g) * cap + pp[m]) * hs;
      std::memcpy(kp + dst, qp + m * width + (nh + g) * hs, hs * sizeof(float));
      std::memcpy(vp + dst, qp + m * width + (nh + nkv + g) * hs, hs * sizeof(float));
    }
  }
  at::Tensor y = at::empty({M, nh * hs}, qkv.options());
  float* yp = y.data_ptr<float>();
  const float scale = 1.f / std::sqrt(static_cast<float>(hs));
  at::parallel_for(0, M * nkv, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> p;
    std::vector<__m512> acc(rep * nv);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t m = t / nkv, g = t % nkv, S = pp[m] + 1;
      const float* K = kp + (m * nkv + g) * cap * hs;
      const float* V = vp + (m * nkv + g) * cap * hs;
      const float* q = qp + m * width + g * rep * hs;  // the rep query heads of kv head g
      p.assign(rep * S, 0.f);
      for (int64_t s = 0; s < S; ++s) {
        for (int64_t h = 0; h < rep; ++h) {
          __m512 d = _mm512_setzero_ps();
          for (int64_t c = 0; c < nv; ++c)
            d = _mm512_fmadd_ps(_mm512_loadu_ps(q + h * hs + 16 * c), _mm512_loadu_ps(K + s * hs + 16 * c), d);
          p[h * S + s] = hsum(d) * scale;
        }
      }
      for (int64_t h = 0; h < rep; ++h) {  // softmax over the row's positions
        float* ph = p.data() + h * S;
        float mx = -INFINITY;
        for (int64_t s = 0; s < S; ++s) mx = std::max(mx, ph[s]);
        __m512 sum = _mm512_setzero_ps();
        int64_t s = 0;
        for (; s + 16 <= S; s += 16) {
          const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(ph + s), _mm512_set1_ps(mx)));
          _mm512_storeu_ps(ph + s, e);
          sum = _mm512_add_ps(sum, e);
        }
        if (s < S) {
          const __mmask16 k = static_cast<__mmask16>((1u << (S - s)) - 1);
          const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, ph + s), _mm512_set1_ps(mx)));
          _mm512_mask_storeu_ps(ph + s, k, e);
          sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
        }
        const float inv = 1.f / hsum(sum);
        for (int64_t s2 = 0; s2 < S; ++s2) ph[s2] *= inv;
      }
      for (auto& a : acc) a = _mm512_setzero_ps();
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = 0; c < nv; ++c) {
          const __m512 v = _mm512_loadu_ps(V + s * hs + 16 * c);
          for (int64_t h = 0; h < rep; ++h)
            acc[h * nv + c] = _mm512_fmadd_ps(_mm512_set1_ps(p[h * S + s]), v, acc[h * nv + c]);
        }
      for (int64_t h = 0; h < rep; ++h)
        for (int64_t c = 0; c < nv; ++c)
          _mm512_storeu_ps(yp + m * nh * hs + (g * rep + h) * hs + 16 * c, acc[h * nv + c]);
    }
  });
  return y;
}

// SwiGLU's product silu(a) * b of the gate and up projections (M, F), and its gradients for an upstream
// gradient g: with s = sigmoid(a), da = g * b * s * (1 + a * (1 - s)) and db = g * a * s. One pass each
// way where torch makes three forward and five backward; nothing but a and b is kept for backward.
namespace {
inline __m512 sigmoid16(__m512 a) {
  return _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_add_ps(_mm512_set1_ps(1.f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), a))));
}

template <typename F>
void swiglu_rows(const at::Tensor& a, const at::Tensor& b, const char* name, F&& f) {
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous() && a.sizes() == b.sizes() && a.scalar_type() == at::kFloat &&
              b.scalar_type() == at::kFloat && a.size(-1) % 16 == 0, name, ": contiguous float32 (M, F) with F % 16 == 0");
  const int64_t n = a.numel();
  at::parallel_for(0, n / 16, 2048, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0 * 16; i < i1 * 16; i += 16) f(i);
  });
}
}  // namespace

at::Tensor swiglu(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor y = at::empty_like(a);
  const float *ap = a.data_ptr<float>(), *bp = b.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  swiglu_rows(a, b, "swiglu", [&](int64_t i) {
    const __m512 av = _mm512_loadu_ps(ap + i);
    _mm512_storeu_ps(yp + i, _mm512_mul_ps(_mm512_mul_ps(av, sigmoid16(av)), _mm512_loadu_ps(bp + i)));
  });
  return y;
}

std::vector<at::Tensor> swiglu_backward(const at::Tensor& g_, const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor g = g_.contiguous();
  TORCH_CHECK(g.sizes() == a.sizes() && g.scalar_type() == at::kFloat, "swiglu_backward: g must match a");
  at::Tensor da = at::empty_like(a), db = at::empty_like(b);
  const float *gp = g.data_ptr<float>(), *ap = a.data_ptr<float>(), *bp = b.data_ptr<float>();
  float *dap = da.data_ptr<float>(), *dbp = db.data_ptr<float>();
  swiglu_rows(a, b, "swiglu_backward", [&](int64_t i) {
    const __m512 av = _mm512_loadu_ps(ap + i), gv = _mm512_loadu_ps(gp + i), sv = sigmoid16(av);
    const __m512 one = _mm512_set1_ps(1.f);
    _mm512_storeu_ps(dbp + i, _mm512_mul_ps(gv, _mm512_mul_ps(av, sv)));
    const __m512 ds = _mm512_mul_ps(sv, _mm512_fmadd_ps(av, _mm512_sub_ps(one, sv), one));
    _mm512_storeu_ps(dap + i, _mm512_mul_ps(_mm512_mul_ps(gv, _mm512_loadu_ps(bp + i)), ds));
  });
  return {da, db};
}
