// The Python module of primer's CPU kernels (see qmm.cpp and step.cpp).
#include <torch/extension.h>

at::Tensor q4_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& d, const at::Tensor& m, bool act8);
at::Tensor q8_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& d, bool act8);
bool act8_available();
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps);
std::vector<at::Tensor> rms_norm_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& w, double eps);
at::Tensor swiglu(const at::Tensor& a, const at::Tensor& b);
std::vector<at::Tensor> swiglu_backward(const at::Tensor& g, const at::Tensor& a, const at::Tensor& b);
void rope_(at::Tensor& qkv, const at::Tensor& pos, const at::Tensor& cos, const at::Tensor& sin, int64_t heads, int64_t hs);
at::Tensor attend(const at::Tensor& qkv, at::Tensor& kc, at::Tensor& vc, const at::Tensor& pos, int64_t nh, int64_t nkv);

// Every kernel lets go of the GIL while it runs (it touches no Python object): a serving process's event loop,
// on another thread, can then answer clients during a decode step instead of waiting for the step to end.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  using nogil = py::call_guard<py::gil_scoped_release>;
  mod.def("q4_mm", &q4_mm, "x (M,K) f32 @ W^T for Q4 blocks in primer's layout -> (M,N) f32; act8: int8 activations (VNNI)", nogil(),
          py::arg("x"), py::arg("codes"), py::arg("d"), py::arg("m"), py::arg("act8") = false);
  mod.def("q8_mm", &q8_mm, "x (M,K) f32 @ W^T for Q8 blocks in primer's layout -> (M,N) f32; act8: int8 activations (VNNI)", nogil(),
          py::arg("x"), py::arg("codes"), py::arg("d"), py::arg("act8") = false);
  mod.def("act8_available", &act8_available, "whether this CPU runs the int8-activation (VNNI) path");
  mod.def("rms_norm", &rms_norm, "x * rsqrt(mean(x^2) + eps) * w per row", nogil());
  mod.def("rms_norm_backward", &rms_norm_backward, "(dx, dw) of rms_norm for an upstream gradient g", nogil());
  mod.def("swiglu", &swiglu, "silu(a) * b", nogil());
  mod.def("swiglu_backward", &swiglu_backward, "(da, db) of swiglu for an upstream gradient g", nogil());
  mod.def("rope_", &rope_, "rotate-half rotary embedding of the first `heads` heads of each row, in place", nogil());
  mod.def("attend", &attend, "one decode step of grouped-query attention, each row over its own cached positions", nogil());
}
