// 2-D average pooling (NCHW, float32, floor mode) through oneDNN, forward and backward, for CPU training
// in Paddle's eager mode.
//
// Paddle 3.3.1's CPU avg-pool took 0.8 ms forward + backward on LeNet's [128, 16, 10, 10] map (AMD EPYC,
// Zen 4), oneDNN's jit kernel 0.2 ms. Max pooling stays with Paddle's indexed kernel: oneDNN's, on plain
// NCHW, was no faster there (it transposes to a blocked layout and back). Primitives are cached per shape.
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "onednn_common.h"
#include "paddle/extension.h"

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

struct PoolPrims {
  dnnl::pooling_forward fwd;
  dnnl::pooling_backward bwd;
  memory::desc src, dst;
};

int64_t pooled(int64_t in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

PoolPrims& avg_prims(const std::vector<int64_t>& x, int kh, int kw, int sh, int sw, int ph, int pw, bool exclusive) {
  static std::unordered_map<std::string, PoolPrims> cache;
  static std::mutex mu;
  std::string key;
  for (int64_t v : x) key += std::to_string(v) + ",";
  for (int v : {kh, kw, sh, sw, ph, pw, static_cast<int>(exclusive)}) key += std::to_string(v) + ",";
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;

  auto& eng = cpu_engine();
  int64_t oh = pooled(x[2], kh, sh, ph), ow = pooled(x[3], kw, sw, pw);
  // Right padding that reproduces the floor in the output size (negative where the last rows go unused).
  memory::dims pad_r{(oh - 1) * sh + kh - x[2] - ph, (ow - 1) * sw + kw - x[3] - pw};
  // Paddle's exclusive=True divides by the window's cells inside the input, False by the whole window.
  auto alg = exclusive ? dnnl::algorithm::pooling_avg_exclude_padding : dnnl::algorithm::pooling_avg_include_padding;
  PoolPrims p;
  p.src = memory::desc({x[0], x[1], x[2], x[3]}, dt::f32, tag::nchw);
  p.dst = memory::desc({x[0], x[1], oh, ow}, dt::f32, tag::nchw);
  auto fwd_pd = dnnl::pooling_forward::primitive_desc(eng, dnnl::prop_kind::forward_training, alg, p.src, p.dst,
                                                      {sh, sw}, {kh, kw}, {0, 0}, {ph, pw}, pad_r);
  auto bwd_pd = dnnl::pooling_backward::primitive_desc(eng, alg, p.src, p.dst, {sh, sw}, {kh, kw}, {0, 0}, {ph, pw},
                                                       pad_r, fwd_pd);
  p.fwd = dnnl::pooling_forward(fwd_pd);
  p.bwd = dnnl::pooling_backward(bwd_pd);
  return cache.emplace(key, std::move(p)).first->second;
}

void check_input(const paddle::Tensor& x) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32 && x.shape().size() == 4,
           "onednn_avg_pool2d: a float32 CPU tensor [N, C, H, W]");
}

}  // namespace

std::vector<paddle::Tensor> AvgPoolForward(const paddle::Tensor& x, int kh, int kw, int sh, int sw, int ph, int pw,
                                           bool exclusive) {
  check_input(x);
  auto& p = avg_prims(x.shape(), kh, kw, sh, sw, ph, pw, exclusive);
  auto out = paddle::empty(p.dst.get_dims(), paddle::DataType::FLOAT32, x.place());
  auto& eng = cpu_engine();
  dnnl::stream s(eng);
  memory xs(p.src, eng, const_cast<float*>(x.data<float>())), ys(p.dst, eng, out.data<float>());
  p.fwd.execute(s, {{DNNL_ARG_SRC, xs}, {DNNL_ARG_DST, ys}});
  s.wait();
  return {out};
}

// x is an input only for its shape: the gradient of an average does not depend on the values.
std::vector<paddle::Tensor> AvgPoolBackward(const paddle::Tensor& x, const paddle::Tensor& dy, int kh, int kw, int sh,
                                            int sw, int ph, int pw, bool exclusive) {
  auto& p = avg_prims(x.shape(), kh, kw, sh, sw, ph, pw, exclusive);
  auto dx = paddle::empty(x.shape(), paddle::DataType::FLOAT32, x.place());
  auto& eng = cpu_engine();
  dnnl::stream s(eng);
  memory dys(p.dst, eng, const_cast<float*>(dy.data<float>())), dxs(p.src, eng, dx.data<float>());
  p.bwd.execute(s, {{DNNL_ARG_DIFF_DST, dys}, {DNNL_ARG_DIFF_SRC, dxs}});
  s.wait();
  return {dx};
}

std::vector<std::vector<int64_t>> AvgPoolInferShape(const std::vector<int64_t>& x, int kh, int kw, int sh, int sw,
                                                    int ph, int pw, bool exclusive) {
  return {{x[0], x[1], pooled(x[2], kh, sh, ph), pooled(x[3], kw, sw, pw)}};
}

PD_BUILD_OP(onednn_avg_pool2d)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"kh: int", "kw: int", "sh: int", "sw: int", "ph: int", "pw: int", "exclusive: bool"})
    .SetKernelFn(PD_KERNEL(AvgPoolForward))
    .SetInferShapeFn(PD_INFER_SHAPE(AvgPoolInferShape));

PD_BUILD_GRAD_OP(onednn_avg_pool2d)
    .Inputs({"X", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"kh: int", "kw: int", "sh: int", "sw: int", "ph: int", "pw: int", "exclusive: bool"})
    .SetKernelFn(PD_KERNEL(AvgPoolBackward));
